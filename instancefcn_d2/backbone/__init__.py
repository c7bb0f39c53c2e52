from .vgg import VGG16, build_vgg16_backbone

__all__ = ["VGG16", "build_vgg16_backbone"]
