"""InstanceFCN (Dai et al., ECCV 2016) as a Detectron2 plugin.

``import instancefcn_d2`` registers the ``InstanceFCN`` meta-architecture and the
``build_vgg16_backbone`` backbone with Detectron2.
"""
from . import compat

compat.apply()  # must precede any detectron2 import below

from .config import add_instancefcn_config  # noqa: E402
from .backbone import VGG16, VGG16FPN, build_vgg16_backbone, build_vgg16_fpn_backbone  # noqa: E402
from .meta_arch import InstanceFCN  # noqa: E402
from .data.mapper import InstanceFCNDatasetMapper  # noqa: E402

__version__ = "0.1.0"
