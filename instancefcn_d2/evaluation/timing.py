"""Per-image inference time of an evaluation, measured around the model's forward only."""
import time

import torch
import torch.nn as nn

__all__ = ["TimedModel", "drop_undefined"]


class TimedModel(nn.Module):
    """Wraps a model for ``inference_on_dataset``; records the wall time of each forward.

    Data loading and the evaluator's ``process``/``evaluate`` are outside the timed span, so
    this is the "pure compute time" that detectron2's ``inference_on_dataset`` logs (and does not
    return). ``eval()``/``train()`` reach the wrapped model as a child module.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seconds = []  # one entry per batch
        self.images = []  # images in that batch

    def forward(self, inputs):
        start = time.perf_counter()
        outputs = self.model(inputs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # CUDA kernels run asynchronously
        self.seconds.append(time.perf_counter() - start)
        self.images.append(len(inputs))
        return outputs

    def seconds_per_image(self):
        """Mean seconds per image after the first min(5, n - 1) batches (warm-up, as
        ``inference_on_dataset`` skips them); None before any batch."""
        if not self.seconds:
            return None
        skip = min(5, len(self.seconds) - 1)
        return sum(self.seconds[skip:]) / sum(self.images[skip:])


def drop_undefined(results):
    """A nested results dict without its None values (area ranges without ground truth), for
    consumers that need floats (detectron2's EvalHook writes every value as a scalar)."""
    out = {}
    for k, v in results.items():
        if isinstance(v, dict):
            out[k] = drop_undefined(v)
        elif v is not None:
            out[k] = v
    return out
