"""Where a feature cell sits in the input: cell ``j`` of a level of stride ``s`` is centred at
pixel ``(j + offset) * s``.

The offset depends on how the backbone downsamples. VGG-16's 2x2/stride-2 poolings tile the
input, so cell ``j`` covers pixels ``[j*s, (j+1)*s)`` and is centred at ``(j + 0.5) * s``.
ResNet's stride-2 convolutions (and its 3x3 max-pool) are centred on input pixel ``2j``, so
its cells are centred at ``j * s``, detectron2's ``ANCHOR_GENERATOR.OFFSET`` 0.0 convention
(up to half a pixel, which detectron2 ignores too). A backbone declares its offsets with a
``cell_offsets`` attribute ``{feature name: offset}`` (as :class:`VGG16` does); detectron2's
``FPN`` inherits each output's offset from the bottom-up feature it laterally connects, and
its top block's levels (``p6 = p5[::2]``) halve it; any other backbone gets 0.0, detectron2's
default for its own backbones.

Windows are placed with these offsets in training (``targets.window_boxes``,
``window_grid_size``) and at inference alike.
"""
import math
from typing import Dict, List, Sequence

from detectron2.modeling import Backbone
from detectron2.modeling.backbone.fpn import FPN

__all__ = ["DEFAULT_CELL_OFFSET", "cell_offsets", "level_cell_offsets"]

DEFAULT_CELL_OFFSET = 0.0  # detectron2's ANCHOR_GENERATOR.OFFSET default, right for its ResNets


def cell_offsets(backbone: Backbone) -> Dict[str, float]:
    """``{output name: offset}`` for every output of ``backbone``."""
    shapes = backbone.output_shape()
    declared = getattr(backbone, "cell_offsets", None)
    if declared is not None:
        return {name: float(declared[name]) for name in shapes}
    if isinstance(backbone, FPN):
        bottom = cell_offsets(backbone.bottom_up)
        bottom_shapes = backbone.bottom_up.output_shape()
        # FPN names each output after its stride: p{log2(stride)} (detectron2's fpn.py).
        by_stride = {bottom_shapes[f].stride: bottom[f] for f in backbone.in_features}
        out = {}
        for name in sorted(shapes, key=lambda n: shapes[n].stride):
            s = shapes[name].stride
            if s in by_stride:
                out[name] = by_stride[s]
            else:  # a top-block level samples the level below at 2j: (2j + o) * s = (j + o/2) * 2s
                out[name] = out[f"p{int(math.log2(s // 2))}"] / 2
        return out
    return {name: DEFAULT_CELL_OFFSET for name in shapes}


def level_cell_offsets(backbone: Backbone, in_features: Sequence[str]) -> List[float]:
    """Offsets of the levels ``in_features`` of ``backbone``, in that order."""
    offsets = cell_offsets(backbone)
    return [offsets[f] for f in in_features]
