#!/usr/bin/env python
"""Draw InstanceFCN's segment proposals on images, and optionally save them as COCO results.

  python tools/demo.py --config-file configs/quickstart/InstanceFCN-VGG16-synthetic.yaml \\
      --input datasets/synthetic/val --output output/demo \\
      --opts MODEL.WEIGHTS output/quickstart/model_final.pth
  python tools/demo.py --config-file ... --input a.jpg 'photos/*.png' --output vis \\
      --top-n 10 --json vis/proposals.json --opts MODEL.WEIGHTS model_final.pth

``--input`` takes image files, folders (their images, not recursive) and glob patterns.
Each image gets ``<output>/<stem>.png``: the ``--top-n`` best proposals, one colour each,
labelled with their rank and score (``#1 0.93``); images with a shorter side under
``--min-side`` (512) are drawn enlarged to it. With ``--dataset NAME`` (a registered dataset
with masks, e.g. ``synthetic_val``), images of that dataset also get the recall view beside it:
each object's best proposal, labelled with its rank and mask IoU (objects no proposal touches
are outlined and labelled "missed"), so the picture shows ranking and coverage together. Any ``MODEL.INSTANCEFCN.MASK_FORMAT`` works (``--opts
MODEL.INSTANCEFCN.MASK_FORMAT rle`` for large photos: no full-image mask per proposal). ``--json`` writes every proposal of every image as COCO results
(compressed-RLE masks, ``category_id`` 1) with ``"file_name"`` added to each record.
Unreadable images are reported and skipped; the exit status is then 1.
"""
import argparse
import glob
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instancefcn_d2  # noqa: E402,F401  (registers the model; must precede detectron2 imports)
from instancefcn_d2.config import get_project_cfg  # noqa: E402
from instancefcn_d2.engine import check_weights  # noqa: E402
from instancefcn_d2.evaluation.export import (  # noqa: E402
    instances_to_coco_results,
    instances_to_proposal_record,
    write_coco_results,
    write_proposal_pickle,
)
from instancefcn_d2.visualize import draw_best_per_object, draw_proposals, side_by_side  # noqa: E402

import cv2  # noqa: E402
import torch  # noqa: E402

from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402

logger = logging.getLogger("instancefcn_d2.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE", help="e.g. configs/InstanceFCN-VGG16-COCO.yaml")
    ap.add_argument("--input", nargs="+", required=True, metavar="PATH",
                    help="image files, folders of images and/or glob patterns (quote them)")
    ap.add_argument("--output", required=True, metavar="DIR", help="folder for the <stem>.png overlays")
    ap.add_argument("--top-n", type=int, default=20, help="proposals drawn per image (default 20; <= 0: all)")
    ap.add_argument("--json", default=None, metavar="FILE",
                    help="also write all proposals of all images as COCO results JSON (RLE masks)")
    ap.add_argument("--proposals-pkl", default=None, metavar="FILE",
                    help="also write the proposals' boxes as a detectron2 precomputed-proposal pickle "
                         "(ids as in --image-id), for MODEL.LOAD_PROPOSALS")
    ap.add_argument("--image-id", choices=("index", "stem"), default="index",
                    help="image_id in --json: position in the input list (default), or the file "
                         "stem (as int when numeric, e.g. COCO's 000000397133.jpg -> 397133)")
    ap.add_argument("--no-scores", action="store_true", help="do not write scores on the masks")
    ap.add_argument("--dataset", default=None, metavar="NAME",
                    help="a registered dataset with masks (e.g. synthetic_val): its images also get the "
                         "recall view (each object's best proposal, with its rank and IoU)")
    ap.add_argument("--min-side", type=int, default=512, metavar="PX",
                    help="draw images whose shorter side is smaller enlarged to it, so that masks and "
                         "score labels stay readable (default 512; 0: each image at its own size)")
    ap.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                    help="config overrides, e.g. --opts MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu")
    return ap


def _is_image(path):
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def expand_inputs(patterns):
    """Files / folders / globs -> (image paths in order, without repeats; patterns matching nothing)."""
    paths, missing, seen = [], [], set()

    def add(p):
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(os.path.join(pattern, f) for f in os.listdir(pattern)
                           if _is_image(f) and os.path.isfile(os.path.join(pattern, f)))
        elif os.path.isfile(pattern):
            found = [pattern]  # named explicitly: try it whatever its extension
        elif glob.has_magic(pattern):
            found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p) and _is_image(p))
        else:
            found = []
        if not found:
            missing.append(pattern)
        for p in found:
            add(p)
    return paths, missing


def _output_names(paths):
    """``<stem>.png`` per input; repeated stems (same name in two folders) get ``_1``, ``_2``..."""
    names, used = [], set()
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        name, k = stem, 0
        while name.lower() in used:
            k += 1
            name = f"{stem}_{k}"
        used.add(name.lower())
        names.append(name + ".png")
    return names


def _image_id(path, index, mode):
    if mode == "index":
        return index
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else stem


def ground_truth_masks(dataset_name):
    """``{absolute file name: callable -> (G, H, W) bool masks}`` of a registered dataset's
    non-crowd objects (the project's own datasets are registered here)."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import annotations_to_instances
    from instancefcn_d2.data import register_project_datasets

    register_project_datasets(names=[dataset_name])
    out = {}
    for d in DatasetCatalog.get(dataset_name):
        annos = [a for a in d.get("annotations", []) if not a.get("iscrowd") and a.get("segmentation")]

        def masks(annos=annos, size=(d["height"], d["width"])):
            if not annos:
                return torch.zeros(0, *size, dtype=torch.bool)
            return annotations_to_instances(annos, size, mask_format="bitmask").gt_masks.tensor

        out[os.path.abspath(d["file_name"])] = masks
    return out


def setup_cfg(args):
    cfg = get_project_cfg(args.config_file, args.opts)
    device_given = "MODEL.DEVICE" in list(args.opts)[0::2]
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available() and not device_given:
        logger.info(f"CUDA is not available: running on the CPU (config had MODEL.DEVICE={cfg.MODEL.DEVICE}).")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def _fmt_seconds(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(levelname)s: %(message)s",
                            datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)

    paths, missing = expand_inputs(args.input)
    for pattern in missing:
        logger.error(f"--input {pattern!r}: no such file, or no images in it")
    if not paths:
        logger.error("No input images found.")
        return 2

    names = _output_names(paths)
    os.makedirs(args.output, exist_ok=True)
    for path, name in zip(paths, names):
        out = os.path.join(args.output, name)
        if os.path.exists(out) and os.path.samefile(out, path):
            logger.error(f"Refusing to overwrite the input {path!r} with its overlay: choose another --output.")
            return 2

    cfg = setup_cfg(args)
    check_weights(cfg, inference=True)
    # DefaultPredictor resizes with ResizeShortestEdge(MIN_SIZE_TEST); our configs set it to 0,
    # for which detectron2 v0.6 returns a NoOpTransform: the model builds its own pyramid.
    predictor = DefaultPredictor(cfg)
    threshold = cfg.MODEL.INSTANCEFCN.MASK_THRESHOLD  # binarises "roi"-format masks as the model would
    logger.info(f"{len(paths)} image(s) -> {os.path.abspath(args.output)} (device {cfg.MODEL.DEVICE}, "
                f"scales {list(cfg.MODEL.INSTANCEFCN.TEST_SCALES)}, top {args.top_n} drawn)")

    truth = ground_truth_masks(args.dataset) if args.dataset else {}
    results, records, failed, num_proposals = [], [], [], 0
    start = time.perf_counter()
    for index, (path, name) in enumerate(zip(paths, names)):
        t0 = time.perf_counter()
        try:
            # DefaultPredictor takes BGR whatever cfg.INPUT.FORMAT is (it flips for "RGB" models).
            image = read_image(path, format="BGR")
        except Exception as e:  # noqa: BLE001  (PIL raises many kinds for broken files)
            logger.error(f"[{index + 1}/{len(paths)}] cannot read {path!r}, skipped: {type(e).__name__}: {e}")
            failed.append(path)
            continue
        try:
            instances = predictor(image)["instances"].to("cpu")
            overlay = draw_proposals(image, instances, top_n=args.top_n, score_labels=not args.no_scores,
                                     min_side=args.min_side, mask_threshold=threshold)
            gt = truth.get(os.path.abspath(path))
            if gt is not None:
                recall = draw_best_per_object(image, instances, gt(), min_side=args.min_side,
                                              mask_threshold=threshold)
                top = f"top {args.top_n}" if args.top_n > 0 else "all"
                overlay = side_by_side([overlay, recall], [f"{top} proposals: #rank score",
                                                           "best proposal per object: #rank IoU"])
            out_path = os.path.join(args.output, name)
            if not cv2.imwrite(out_path, overlay[:, :, ::-1]):
                raise OSError(f"cv2.imwrite could not write {out_path!r}")
        except Exception:  # noqa: BLE001  (report, go on with the other images)
            logger.exception(f"[{index + 1}/{len(paths)}] failed on {path!r}, skipped")
            failed.append(path)
            continue
        image_id = _image_id(path, index, args.image_id)
        if args.json:
            for record in instances_to_coco_results(instances, image_id, mask_threshold=threshold):
                record["file_name"] = path
                results.append(record)
        if args.proposals_pkl:
            records.append(instances_to_proposal_record(instances, image_id))
        num_proposals += len(instances)
        done = index + 1
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (len(paths) - done)
        best = f", best {float(instances.scores.max()):.2f}" if len(instances) else ""
        logger.info(f"[{done}/{len(paths)}] {path}: {image.shape[1]}x{image.shape[0]}, "
                    f"{len(instances)} proposals{best}, {time.perf_counter() - t0:.1f}s (ETA {_fmt_seconds(eta)})")

    if args.json:
        write_coco_results(results, args.json)
        logger.info(f"Wrote {len(results)} proposals to {args.json}")
    if args.proposals_pkl:
        write_proposal_pickle(records, args.proposals_pkl)
        logger.info(f"Wrote box proposals of {len(records)} image(s) to {args.proposals_pkl}")
    ok = len(paths) - len(failed)
    elapsed = time.perf_counter() - start
    logger.info(f"Done: {ok}/{len(paths)} image(s) in {_fmt_seconds(elapsed)} "
                f"({elapsed / max(ok, 1):.2f}s per image), {num_proposals} proposals, "
                f"overlays in {args.output}")
    if failed or missing:
        logger.error(f"{len(failed)} image(s) failed: {json.dumps(failed)}"
                     + (f"; {len(missing)} input(s) matched nothing" if missing else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
