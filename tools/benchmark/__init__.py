"""Cost benchmark of InstanceFCN: inference time with a per-stage breakdown, peak memory,
training time per iteration, FLOPs against a measured GEMM peak, and detectron2's Mask R-CNN
R50-FPN on the same machine in the same run.

  python -m tools.benchmark                        # full run -> output/benchmark/
  python -m tools.benchmark --quick                # tiny smoke run of every measurement (one process)
  python -m tools.benchmark --write-repo-results   # also results/benchmark.json + BENCHMARKS.md
  python -m tools.benchmark --device cuda --amp bf16
  python -m tools.benchmark.report output/benchmark/benchmark.json   # BENCHMARKS.md from a JSON

Modules: ``cli`` (command line, plan of measurements, runner: one fresh process per
measurement; ``--quick`` runs all but the memory rows in its own process), ``workers`` (what
runs in that process: one function per kind of row, Mask R-CNN's in ``workers_mask_rcnn``),
``measures`` (what the workers share: config, weights, image, median, peak memory), ``stages`` (stage times from the
``torch.profiler.record_function`` labels the model carries), ``calibration`` (machine, GEMM
peak, available memory), ``summary`` (headline keys and targets), ``report`` (BENCHMARKS.md
from the JSON through ``template.md``).
"""
import os

SCHEMA = 2  # of benchmark.json; 1 was tools/benchmark.py (stage hooks), 2 this package (profiler labels)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PYRAMID_CONFIG = "configs/Base-InstanceFCN-VGG16.yaml"
# The models compared with Mask R-CNN R50-FPN (key of vs_mask_rcnn_r50_fpn_by_model -> config).
MODELS = {
    "vgg16_pyramid": PYRAMID_CONFIG,
    "vgg16_fpn": "configs/InstanceFCN-VGG16-FPN-COCO.yaml",
    "r50_fpn": "configs/InstanceFCN-R50-FPN-COCO.yaml",
}
QUICKSTART_CONFIGS = {
    "quickstart": "configs/quickstart/InstanceFCN-VGG16-synthetic.yaml",
    "quickstart_fpn": "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml",
}
MASK_RCNN_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
