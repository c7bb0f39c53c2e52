from .vgg import VGG16, build_vgg16_backbone
from .vgg_fpn import VGG16FPN, build_vgg16_fpn_backbone

__all__ = ["VGG16", "VGG16FPN", "build_vgg16_backbone", "build_vgg16_fpn_backbone"]
