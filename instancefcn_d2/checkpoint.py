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

__all__ = ["AtomicDetectionCheckpointer"]

_TMP = ".tmp"


def _fsync_dir(path: str):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # not supported on every filesystem
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write):
    """``write(f)`` into ``path + ".tmp"``, fsync, then rename over ``path``."""
    tmp = path + _TMP
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose ``save`` and ``tag_last_checkpoint`` are atomic.

    Only local ``save_dir``s are written atomically; other ``PathManager`` URIs fall back to
    the parent's behaviour. Stale ``*.pth.tmp`` files left by a killed run are removed when
    the checkpointer is created (by the process that writes checkpoints).
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        if self._local():
            for stale in glob.glob(os.path.join(glob.escape(self.save_dir), "*.pth" + _TMP)):
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
        os.makedirs(self.save_dir, exist_ok=True)
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local():
            return super().tag_last_checkpoint(last_filename_basename)
        _atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )
