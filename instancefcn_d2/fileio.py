"""Atomic file writes: a killed or failing writer never leaves half a file under the real name.

Checkpoints, the VGG-16 weights, exported proposals and the generated dataset's JSON all go
through :func:`atomic_write`, so each name holds either its previous complete content or the
new complete content.
"""
import os

__all__ = ["TMP_SUFFIX", "atomic_write"]

# Partial files are ``<name>.tmp``: a fixed name, so a later run can find and remove the
# leftovers of a killed one (see AtomicDetectionCheckpointer).
TMP_SUFFIX = ".tmp"


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


def atomic_write(path, write, mode: str = "wb"):
    """``write(f)`` into ``path + ".tmp"`` (opened with ``mode``), fsync, rename over ``path``.

    Creates the parent folder; on any failure the temporary file is removed and the error
    re-raised, and ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + TMP_SUFFIX
    try:
        with open(tmp, mode) as f:
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
    _fsync_dir(directory)
