#!/usr/bin/env python
"""The quick start: train on generated data, evaluate proposal AR, draw pictures, and write
every figure of the run to one results file.

    bash tools/quickstart.sh                       # set-up + this script (the README's main command)
    python tools/quickstart.py --model vgg16_pyramid   # the paper's model (image pyramid) instead
    python tools/quickstart.py --with-k1-ablation  # also train k=1 (a plain FCN) and compare
    python tools/quickstart.py --variants vgg16_pyramid,r50_fpn_scratch   # other models, same data

Steps (each a normal command you can also run by hand), timed separately:
  1. train:    python train_net.py --config-file configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml
               DATASETS.TEST "()"   (generates the synthetic data on first use, then trains)
  2. eval:     python train_net.py ... --eval-only MODEL.WEIGHTS OUTPUT/model_final.pth
               (SegmentProposalEvaluator: mask and box AR; per-image inference time)
  3. pictures: python tools/demo.py on the first val images -> OUTPUT/pictures/*.png (the top 10,
               and each object's best proposal beside them: --dataset)
With --with-k1-ablation it repeats 1-3 with MODEL.INSTANCEFCN.K 1 and draws
RESULTS_DIR/k1_vs_k5.png (a val image with touching objects).

RESULTS_DIR/quickstart.json (default: OUTPUT_DIR/quickstart.json) holds the whole record: the AR
of each model, each stage's seconds (set-up is outside this script), the machine (tools/machine.py:
CPU, threads, GEMM peak, load average at start and whether it was idle, versions, git commit).
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))
# --model / --variants: the models trained and scored on the same synthetic data.
VARIANTS = {
    "vgg16_fpn": "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml",
    "vgg16_pyramid": "configs/quickstart/InstanceFCN-VGG16-synthetic.yaml",  # the paper's model
    "r50_fpn_scratch": "configs/quickstart/InstanceFCN-R50-FPN-synthetic.yaml",
}
DEFAULT_MODEL = "vgg16_fpn"
CONFIG = VARIANTS[DEFAULT_MODEL]
MASK_KEYS = ("AR@10", "AR@100", "AR@1000")
SMOKE_OPTS = [
    "DATASETS.TRAIN", "('synthetic_tiny_train',)", "DATASETS.TEST", "('synthetic_tiny_val',)",
    "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.CHECKPOINT_PERIOD", "1000", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "MODEL.INSTANCEFCN.TEST_SCALES", "[96]", "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "100",
    "DATALOADER.NUM_WORKERS", "0",
]


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def _timed(cmd):
    start = time.perf_counter()
    run(cmd)
    return round(time.perf_counter() - start, 1)


def train_eval_draw(config, output_dir, opts, num_pictures):
    """Train, evaluate (--eval-only on the final weights) and draw, each stage timed.

    Returns ``{"config", "mask": {...}, "box": {...}, "infer_s_per_image", "stages_s"}``."""
    train_net = [sys.executable, "train_net.py", "--config-file", config]
    weights = os.path.join(output_dir, "model_final.pth")
    stages = {"train": _timed([*train_net, "OUTPUT_DIR", output_dir, *opts, "DATASETS.TEST", "()"])}
    stages["eval"] = _timed([*train_net, "--eval-only", "OUTPUT_DIR", output_dir, *opts,
                             "MODEL.WEIGHTS", weights])
    with open(os.path.join(REPO, output_dir, "proposal_ar.json")) as f:
        results = json.load(f)
    images = val_images(opts)[:num_pictures]
    stages["pictures"] = _timed([sys.executable, "tools/demo.py", "--config-file", config, "--input", *images,
                                 "--output", os.path.join(output_dir, "pictures"), "--top-n", "10",
                                 "--dataset", _test_dataset(opts),
                                 "--opts", *opts, "MODEL.WEIGHTS", weights])
    return {"config": config, "mask": results["segm_proposals"], "box": results["box_proposals"],
            "infer_s_per_image": results["inference"]["s_per_image"], "stages_s": stages}


def _test_dataset(opts):
    """The first DATASETS.TEST of the quick-start config with ``opts``."""
    import instancefcn_d2  # noqa: F401  (before detectron2)
    from instancefcn_d2.config import get_project_cfg

    return get_project_cfg(os.path.join(REPO, CONFIG), opts).DATASETS.TEST[0]


def val_images(opts):
    """File names of the test split, most crowded first (touching objects make the best pictures)."""
    from detectron2.data import DatasetCatalog
    from instancefcn_d2.data import register_project_datasets

    name = _test_dataset(opts)
    register_project_datasets(names=[name])
    dicts = DatasetCatalog.get(name)
    dicts = sorted(dicts, key=lambda d: -sum(1 for a in d.get("annotations", []) if not a.get("iscrowd")))
    return [d["file_name"] for d in dicts]


def k1_vs_k5_picture(k5_dir, k1_dir, image, out_path):
    import cv2

    from instancefcn_d2.visualize import side_by_side

    stem = os.path.splitext(os.path.basename(image))[0]
    pics = [cv2.imread(os.path.join(d, "pictures", stem + ".png"))[:, :, ::-1] for d in (k1_dir, k5_dir)]
    grid = side_by_side(pics, ["k=1 (plain FCN)", "k=5 (InstanceFCN)"])
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    cv2.imwrite(out_path, grid[:, :, ::-1])


def _fmt(v):
    return "–" if v is None else f"{v:.1f}"  # None: no ground truth in that area range


def parse_variants(text):
    names = [v.strip() for v in (text or "").split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose among {', '.join(VARIANTS)}")
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(VARIANTS), default=DEFAULT_MODEL,
                    help=f"the model of the main run and of the k=1 ablation (default {DEFAULT_MODEL}; "
                    "vgg16_pyramid is the paper's)")
    ap.add_argument("--output-dir", default="output/quickstart")
    ap.add_argument("--pictures", type=int, default=8, help="val images to draw")
    ap.add_argument("--with-k1-ablation", action="store_true", help="also train k=1 and compare (2x time)")
    ap.add_argument("--variants", default="", help=f"comma list among {', '.join(VARIANTS)}: "
                    "also train and score these models (the --model one reuses the main run)")
    ap.add_argument("--smoke", action="store_true", help="a few iterations on tiny images (CI)")
    ap.add_argument("--results-dir", default=None,
                    help="where quickstart.json (and k1_vs_k5.png) go; default OUTPUT_DIR")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    args = ap.parse_args(argv)
    variants = parse_variants(args.variants)
    opts = (SMOKE_OPTS if args.smoke else []) + args.opts
    results_dir = args.results_dir or args.output_dir
    config = VARIANTS[args.model]

    from machine import describe_machine

    # Before any work: the load average must describe the machine as the run found it.
    machine = describe_machine("cpu", gemm_sizes=(256, 512) if args.smoke else None)
    start = time.perf_counter()
    record = {
        "command": "python tools/quickstart.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "dataset": _test_dataset(opts),
        "machine": machine,
        "model": args.model,
        "runs": {"k5": train_eval_draw(config, args.output_dir, opts, args.pictures)},
    }
    if args.with_k1_ablation:
        k1_dir = args.output_dir + "_k1"
        record["runs"]["k1"] = train_eval_draw(config, k1_dir, opts + ["MODEL.INSTANCEFCN.K", "1"], args.pictures)
        k1_vs_k5_picture(args.output_dir, k1_dir, val_images(opts)[0], os.path.join(results_dir, "k1_vs_k5.png"))
    if variants:
        record["variants"] = {}
    for name in variants:
        run_ = record["runs"]["k5"] if name == args.model else train_eval_draw(
            VARIANTS[name], os.path.join(args.output_dir + "_variants", name), opts, args.pictures)
        record["variants"][name] = {"config": run_["config"], **{k: run_["mask"][k] for k in MASK_KEYS},
                                    "train_s": run_["stages_s"]["train"], "stages_s": run_["stages_s"],
                                    "infer_s_per_image": run_["infer_s_per_image"]}
    record["wall_clock_s"] = round(time.perf_counter() - start, 1)
    if os.environ.get("QUICKSTART_SETUP_S"):  # run by tools/quickstart.sh: the main command's figure
        record["setup_s"] = float(os.environ["QUICKSTART_SETUP_S"])
        record["main_command_s"] = round(record["setup_s"] + record["wall_clock_s"], 1)

    print("\nClass-agnostic mask AR on", record["dataset"], "(percent; – = no ground truth in that range):")
    for key, r in record["runs"].items():
        print(f"  {key}: " + "  ".join(f"{m} {_fmt(v)}" for m, v in r["mask"].items()))
    for key, r in record.get("variants", {}).items():
        print(f"  {key}: " + "  ".join(f"{m} {_fmt(r[m])}" for m in MASK_KEYS))
    if not machine["idle"]:
        print(f"WARNING: load average {machine['load_average_at_start']} at the start: not an idle machine")
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, "quickstart.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"Pictures: {os.path.join(args.output_dir, 'pictures')}/   wall clock {record['wall_clock_s']} s")
    print(f"Wrote {path}")
    print("python tools/render_results.py copies its figures into RESULTS.md's tables.")
    return record


if __name__ == "__main__":
    main()
