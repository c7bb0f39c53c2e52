"""Shared fixtures: a project config builder and a time-limited multi-process spawn."""
import os
import time

import pytest
import torch.multiprocessing as mp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPAWN_TIMEOUT_S = 240  # per multi-process test: a hung collective fails instead of hanging CI


@pytest.fixture
def spawn():
    """``spawn(fn, args, nprocs, timeout=SPAWN_TIMEOUT_S)``: torch.multiprocessing.spawn that
    fails the test (and kills the workers) when they do not finish within ``timeout`` seconds;
    a worker's exception is re-raised as with ``join=True``."""

    def run(fn, args, nprocs, timeout=SPAWN_TIMEOUT_S):
        ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=1):
                if time.monotonic() > deadline:
                    pytest.fail(f"{nprocs} worker processes did not finish within {timeout} s (hung?)")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
                    p.join(5)

    return run


@pytest.fixture
def project_cfg():
    """``project_cfg(config_file=None, opts=())``: get_cfg + add_instancefcn_config + the YAML
    (relative to the repository) + KEY VALUE overrides, as train_net.py builds it."""
    import instancefcn_d2  # noqa: F401  (before detectron2)
    from detectron2.config import get_cfg

    from instancefcn_d2 import add_instancefcn_config

    def build(config_file=None, opts=()):
        cfg = get_cfg()
        add_instancefcn_config(cfg)
        if config_file:
            cfg.merge_from_file(os.path.join(REPO, config_file))
        cfg.merge_from_list(list(opts))
        return cfg

    return build
