#!/usr/bin/env python
"""Generate (or verify) a synthetic COCO-format dataset and print its statistics.

  python tools/make_synthetic_dataset.py                        # the quick start's data
  python tools/make_synthetic_dataset.py --preset synthetic_tiny
  python tools/make_synthetic_dataset.py --root /tmp/synth --train 40 --val 10 --seed 7

Sizes, seeds and generator parameters come from the preset (``SYNTHETIC_PRESETS``, the same
definition train_net and the quick start use), so the default output is exactly the data
that training reads. Splits already generated with the same parameters are kept (see
ensure_dataset).
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from instancefcn_d2.data import synthetic_splits as S  # noqa: E402
from instancefcn_d2.data.datasets import SYNTHETIC_PRESETS, preset_root  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(SYNTHETIC_PRESETS), default="synthetic",
                    help="dataset definition (default: synthetic, the quick start's)")
    ap.add_argument("--root", default=None,
                    help=f"output folder (default: ${S.ROOT_ENV_VAR} or {S.DEFAULT_ROOT}, plus the preset's suffix)")
    ap.add_argument("--train", type=int, default=None, help="train images (default: the preset's)")
    ap.add_argument("--val", type=int, default=None, help="val images (default: the preset's)")
    ap.add_argument("--seed", type=int, default=None, help="train seed; val uses seed + 1 (default: the preset's seeds)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    _, splits, params = SYNTHETIC_PRESETS[args.preset]
    root = preset_root(args.preset) if args.root is None else args.root
    seeds = {s: seed for s, (_, seed) in splits.items()} if args.seed is None else \
        {"train": args.seed, "val": args.seed + 1}
    counts = {"train": args.train, "val": args.val}
    splits = {s: (n if counts[s] is None else counts[s], seeds[s]) for s, (n, _) in splits.items()}
    start = time.perf_counter()
    generated = S.ensure_dataset(root, splits, **params)
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
