from .cell_offsets import cell_offsets, level_cell_offsets
from .vgg import VGG16, build_vgg16_backbone
from .vgg_fpn import VGG16FPN, build_vgg16_fpn_backbone

__all__ = ["VGG16", "VGG16FPN", "build_vgg16_backbone", "build_vgg16_fpn_backbone", "cell_offsets",
           "level_cell_offsets"]
