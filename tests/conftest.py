"""Shared fixtures: a project config builder and a time-limited multi-process spawn."""
import logging
import os
import time

import pytest
import torch.multiprocessing as mp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPAWN_TIMEOUT_S = 240  # per multi-process test: a hung collective fails instead of hanging CI


@pytest.fixture(autouse=True)
def _project_logs_reach_caplog():
    """detectron2's ``setup_logger(name="instancefcn_d2")`` (run in-process by train_net-style
    tests) turns propagation off for the project's logger, which hides its records from
    ``caplog`` in every later test: turn it back on before each test."""
    logging.getLogger("instancefcn_d2").propagate = True
    yield


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
    """``project_cfg(config_file=None, opts=())``: ``get_project_cfg`` with the YAML relative
    to the repository, as train_net.py builds it."""
    from instancefcn_d2.config import get_project_cfg

    def build(config_file=None, opts=()):
        return get_project_cfg(os.path.join(REPO, config_file) if config_file else "", opts)

    return build
