"""tools/machine.py: the idle rule of load_state and the commit git_commit reports, on their own
(the quick-start record only carries what they return)."""
import logging
import subprocess

import pytest


@pytest.fixture
def machine(load_tool):
    return load_tool("machine")


@pytest.mark.parametrize("load1, load5, cores, idle", [
    (0.4, 0.4, 2, True), (0.5, 0.5, 2, True), (0.6, 0.4, 2, False), (3.0, 1.0, 16, True), (5.0, 1.0, 16, False),
    (0.0, 0.6, 2, False),  # a job that ended a minute ago: the 5-minute load still counts
])
def test_load_state_calls_a_machine_idle_at_a_quarter_load_per_core(machine, caplog, load1, load5, cores, idle):
    caplog.set_level(logging.WARNING, logger="instancefcn_d2.machine")
    state = machine.load_state(loadavg=(load1, load5, 9.0), cores=cores)  # the 15-minute load never counts
    assert state == {"load_average_at_start": [load1, load5, 9.0], "load_per_core": round(load1 / cores, 3),
                     "load_per_core_5min": round(load5 / cores, 3), "idle": idle}
    assert any("not idle-machine figures" in r.getMessage() for r in caplog.records) == (not idle)


def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_names_the_commit_and_a_dirty_tree(machine, tmp_path):
    assert machine.git_commit(str(tmp_path)) is None  # not a git checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "first")
    sha = _git(tmp_path, "log", "-1", "--format=%H")
    assert len(sha) == 40 and machine.git_commit(str(tmp_path)) == sha
    (tmp_path / "new.txt").write_text("untracked\n")  # untracked files do not make it dirty
    assert machine.git_commit(str(tmp_path)) == sha
    (tmp_path / "a.txt").write_text("edited\n")
    assert machine.git_commit(str(tmp_path)) == sha + "-dirty"
