#!/usr/bin/env python
"""The quick start: train on generated data, evaluate proposal AR, draw pictures.

    bash tools/quickstart.sh                       # set-up + this script (the README's main command)
    python tools/quickstart.py --with-k1-ablation  # also train k=1 (a plain FCN) and compare

Steps (each a normal command you can also run by hand):
  1. python train_net.py --config-file configs/quickstart/InstanceFCN-VGG16-synthetic.yaml
     (generates the synthetic data on first use; trains; evaluates with SegmentProposalEvaluator)
  2. python tools/demo.py on the first val images -> OUTPUT/pictures/*.png
With --with-k1-ablation it repeats 1-2 with MODEL.INSTANCEFCN.K 1, writes
results/quickstart.json and results/k1_vs_k5.png (a val image with touching objects).
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CONFIG = "configs/quickstart/InstanceFCN-VGG16-synthetic.yaml"
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


def train_and_draw(output_dir, opts, num_pictures):
    """Train + evaluate with train_net.py, then draw the first val images. Returns the AR dict."""
    run([sys.executable, "train_net.py", "--config-file", CONFIG, "OUTPUT_DIR", output_dir, *opts])
    with open(os.path.join(REPO, output_dir, "proposal_ar.json")) as f:
        results = json.load(f)
    pictures = os.path.join(output_dir, "pictures")
    images = val_images(opts)[:num_pictures]
    run([sys.executable, "tools/demo.py", "--config-file", CONFIG, "--input", *images, "--output", pictures,
         "--top-n", "10", "--opts", "MODEL.WEIGHTS", os.path.join(output_dir, "model_final.pth"), *opts])
    return results


def _test_dataset(opts):
    name = "synthetic_val"
    if "DATASETS.TEST" in opts:
        name = opts[opts.index("DATASETS.TEST") + 1].strip("()',\" ")
    return name


def val_images(opts):
    """File names of the test split, most crowded first (touching objects make the best pictures)."""
    import instancefcn_d2  # noqa: F401
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
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    cv2.imwrite(out_path, grid[:, :, ::-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", default="output/quickstart")
    ap.add_argument("--pictures", type=int, default=8, help="val images to draw")
    ap.add_argument("--with-k1-ablation", action="store_true", help="also train k=1 and compare (2x time)")
    ap.add_argument("--smoke", action="store_true", help="a few iterations on tiny images (CI)")
    ap.add_argument("--results-dir", default="results", help="where --with-k1-ablation writes its files")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    args = ap.parse_args(argv)
    opts = (SMOKE_OPTS if args.smoke else []) + args.opts
    start = time.time()

    k5 = train_and_draw(args.output_dir, opts, args.pictures)
    summary = {"k5": k5["segm_proposals"], "k5_box": k5["box_proposals"],
               "k5_wall_clock_s": round(time.time() - start, 1)}
    if args.with_k1_ablation:
        k1_dir = args.output_dir + "_k1"
        t1 = time.time()
        k1 = train_and_draw(k1_dir, opts + ["MODEL.INSTANCEFCN.K", "1"], args.pictures)
        summary["k1"] = k1["segm_proposals"]
        summary["k1_box"] = k1["box_proposals"]
        summary["k1_wall_clock_s"] = round(time.time() - t1, 1)
        k1_vs_k5_picture(args.output_dir, k1_dir, val_images(opts)[0],
                         os.path.join(args.results_dir, "k1_vs_k5.png"))
    summary["wall_clock_s"] = round(time.time() - start, 1)

    print("\nClass-agnostic mask AR on", _test_dataset(opts), "(percent):")
    for key in [k for k in summary if k in ("k5", "k1")]:
        row = summary[key]
        print(f"  {key}: " + "  ".join(f"{m} {v:.1f}" for m, v in row.items()))
    print(f"Pictures: {os.path.join(args.output_dir, 'pictures')}/   wall clock {summary['wall_clock_s']} s")
    if args.with_k1_ablation:
        os.makedirs(args.results_dir, exist_ok=True)
        with open(os.path.join(args.results_dir, "quickstart.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"Wrote {args.results_dir}/quickstart.json and {args.results_dir}/k1_vs_k5.png")
    return summary


if __name__ == "__main__":
    main()
