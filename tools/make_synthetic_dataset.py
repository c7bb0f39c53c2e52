#!/usr/bin/env python
"""Generate (or verify) the synthetic COCO-format dataset and print its statistics.

  python tools/make_synthetic_dataset.py                       # datasets/synthetic, 200/50 images
  python tools/make_synthetic_dataset.py --root /tmp/synth --train 40 --val 10 --seed 7

Splits already generated with the same parameters are kept (see ensure_dataset).
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from instancefcn_d2.data import synthetic as S  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None,
                    help=f"output folder (default: ${S.ROOT_ENV_VAR} or {S.DEFAULT_ROOT})")
    ap.add_argument("--train", type=int, default=S.DEFAULT_SPLITS["train"][0], help="train images")
    ap.add_argument("--val", type=int, default=S.DEFAULT_SPLITS["val"][0], help="val images")
    ap.add_argument("--seed", type=int, default=S.DEFAULT_SPLITS["train"][1],
                    help="train seed; val uses seed + 1")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    root = S.default_root() if args.root is None else args.root
    splits = {"train": (args.train, args.seed), "val": (args.val, args.seed + 1)}
    start = time.perf_counter()
    generated = S.ensure_dataset(root, splits)
    elapsed = time.perf_counter() - start
    print(f"{'generated ' + ', '.join(generated) if generated else 'up to date'} "
          f"in {elapsed:.1f}s: {os.path.abspath(root)}")
    for split in splits:
        json_path, _ = S.split_paths(root, split)
        stats = S.summarize_split(json_path)
        print(f"  {split:5s} " + "  ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
