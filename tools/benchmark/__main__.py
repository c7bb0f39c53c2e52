"""``python -m tools.benchmark`` or ``python tools/benchmark`` (see tools/benchmark/__init__.py)."""
import os
import sys

if __package__ in (None, ""):  # run as a directory: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tools.benchmark.cli import main  # noqa: E402

sys.exit(main())
