#!/usr/bin/env python
"""Open-world proposals on the generated data: seen vs unseen AR, written to a JSON table.

    python tools/open_world_synthetic.py                 # train both variants, score, write JSON
    python tools/open_world_synthetic.py --iters 500     # shorter schedule (LR step at 80%)
    python tools/open_world_synthetic.py --skip-training # score the proposals already saved
    python tools/open_world_synthetic.py --variants background  # one variant only

For each variant of configs/open_world/InstanceFCN-VGG16-FPN-synthetic-seen-to-unseen.yaml
("background": unseen kinds' annotations dropped in training, as OLN; "ignore": they become
ignore regions) it runs ``train_net.py`` (which trains, then scores the unseen kinds), then
scores the saved proposals (OUTPUT_DIR/inference/synthetic_val/segment_proposals_coco.json)
again on the unseen kinds, on the seen kinds and on all kinds, under both top-N budget rules,
with the same functions the evaluator uses. Writes results/open_world_synthetic.json.
"""
import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))  # machine.py
CONFIG = "configs/open_world/InstanceFCN-VGG16-FPN-synthetic-seen-to-unseen.yaml"
VARIANTS = {"background": [], "ignore": ["DATASETS.TRAIN_UNSEEN_AS", "ignore"]}
TEST_SET = "synthetic_val"
MAX_DETS = (10, 100, 1000)


def _cfg(opts):
    from detectron2.config import get_cfg

    from instancefcn_d2 import add_instancefcn_config
    from instancefcn_d2.engine import merge_config

    cfg = get_cfg()
    add_instancefcn_config(cfg)
    return merge_config(cfg, os.path.join(REPO, CONFIG), opts)


def _schedule_opts(iters):
    if iters is None:
        return []
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.8)},)",
            "SOLVER.CHECKPOINT_PERIOD", str(iters)]


def train(output_dir, opts):
    cmd = [sys.executable, "train_net.py", "--config-file", CONFIG, *opts, "OUTPUT_DIR", output_dir]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return cmd


def score(output_dir, seen, unseen):
    """AR tables of the proposals saved in ``output_dir`` for each (subset, budget rule)."""
    import instancefcn_d2  # noqa: F401
    from instancefcn_d2.data import register_project_datasets
    from instancefcn_d2.evaluation import load_coco_gt, score_proposals

    register_project_datasets(names=[TEST_SET])
    gt = load_coco_gt(TEST_SET)
    path = os.path.join(REPO, output_dir, "inference", TEST_SET, "segment_proposals_coco.json")
    with open(path) as f:
        proposals = json.load(f)
    img_ids = gt.getImgIds()
    table = {"all kinds": score_proposals(gt, proposals, img_ids, MAX_DETS)}
    for label, ids in (("unseen", unseen), ("seen", seen)):
        for rule in ("oln", "exclude_seen"):
            table[f"{label} ({rule})"] = score_proposals(gt, proposals, img_ids, MAX_DETS, ids, rule)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=None, help="SOLVER.MAX_ITER (default: the config's)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--skip-training", action="store_true", help="score proposals already in the output dirs")
    ap.add_argument("--output-root", default="output/open_world")
    ap.add_argument("--out", default="results/open_world_synthetic.json")
    args = ap.parse_args(argv)

    from machine import describe_machine

    machine = describe_machine(gemm_sizes=())  # load average first, before any work
    base = _cfg([])
    unseen = sorted(base.TEST.PROPOSAL_EVAL_CATEGORY_IDS)
    seen = sorted(base.DATASETS.TRAIN_CATEGORY_IDS)  # (5, crowd clumps, is ignored either way)
    out = {"config": CONFIG, "seen_category_ids": seen, "unseen_category_ids": unseen,
           "max_iter": args.iters or base.SOLVER.MAX_ITER, "machine": machine,
           "trained_in_this_run": not args.skip_training,
           "metric": "class-agnostic AR (%) on synthetic_val; mask ('segm') and box", "variants": {}}
    for variant in args.variants:
        extra = VARIANTS[variant]
        output_dir = os.path.join(args.output_root, f"synthetic-{variant}")
        opts = _schedule_opts(args.iters) + extra
        cmd = None if args.skip_training else train(output_dir, opts)
        table = score(output_dir, seen, unseen)
        # train_net's own evaluation (unseen kinds, the config's rule) must agree with ours.
        with open(os.path.join(REPO, output_dir, "proposal_ar.json")) as f:
            own = json.load(f)
        rule = base.TEST.PROPOSAL_BUDGET_RULE
        def _plain(ar):  # NaN (older train_net) and None both mean "no ground truth in that range"
            return {t: {k: None if v is None or v != v else v for k, v in m.items()}
                    for t, m in ar.items() if t in ("segm_proposals", "box_proposals")}

        assert _plain(own) == _plain(table[f"unseen ({rule})"]), (own, table[f"unseen ({rule})"])
        out["variants"][variant] = {
            "command": " ".join(cmd[1:]) if cmd else f"train_net.py --config-file {CONFIG} {' '.join(opts)} "
                                                        f"OUTPUT_DIR {output_dir}",
            "ar": table,
        }
        gap = {k: table["seen (oln)"]["segm_proposals"][k] - table["unseen (oln)"]["segm_proposals"][k]
               for k in ("AR@10", "AR@100")}
        print(f"{variant}: mask AR@100 seen {table['seen (oln)']['segm_proposals']['AR@100']:.1f}, unseen "
              f"{table['unseen (oln)']['segm_proposals']['AR@100']:.1f} (gap AR@10 {gap['AR@10']:.1f}, "
              f"AR@100 {gap['AR@100']:.1f})")
        out["variants"][variant]["mask_gap_seen_minus_unseen_oln"] = gap
    os.makedirs(os.path.dirname(os.path.join(REPO, args.out)), exist_ok=True)
    with open(os.path.join(REPO, args.out), "w") as f:
        json.dump(out, f, indent=2)
    print(f"Wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
