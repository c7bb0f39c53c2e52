"""Crash-safe checkpoints: a killed job never leaves ``last_checkpoint`` pointing at a bad file.

fvcore's ``Checkpointer.save`` writes ``model_XXXXXXX.pth`` in place and then rewrites
``last_checkpoint``, so a SIGKILL, OOM kill or full disk during the (seconds-long) write
leaves a truncated ``.pth`` that ``--resume`` then tries, and fails, to load.
:class:`AtomicDetectionCheckpointer` writes both files to ``<name>.tmp``, flushes them to
disk and ``os.replace``-s them into place, so each name holds either its previous complete
content or the new complete content, and ``last_checkpoint`` is only updated after the
checkpoint it names is complete.
"""
import glob
import os

import torch

from detectron2.checkpoint import DetectionCheckpointer

from .fileio import TMP_SUFFIX, atomic_write

__all__ = ["AtomicDetectionCheckpointer"]


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose ``save`` and ``tag_last_checkpoint`` are atomic.

    Only local ``save_dir``s are written atomically; other ``PathManager`` URIs fall back to
    the parent's behaviour. Stale ``*.pth.tmp`` files left by a killed run are removed when
    the checkpointer is created (by the process that writes checkpoints).
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        if self._local():
            for stale in glob.glob(os.path.join(glob.escape(self.save_dir), "*.pth" + TMP_SUFFIX)):
                self.logger.info(f"Removing {stale}, a partial checkpoint of an interrupted run")
                try:
                    os.remove(stale)
                except OSError:
                    pass

    def _local(self) -> bool:
        return bool(self.save_dir) and self.save_to_disk and "://" not in self.save_dir

    def save(self, name: str, **kwargs) -> None:
        if not self._local():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        assert os.path.basename(save_file) == basename, basename
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )
