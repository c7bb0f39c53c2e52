"""tools/real_data_experiment.py adds new runs to an existing results file only when they
compare: the same iterations, config and learning rate; otherwise it starts a new record."""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tools.real_data_experiment import CONFIG, kept_record  # noqa: E402


def test_a_record_is_kept_only_at_the_same_iterations_config_and_learning_rate(tmp_path):
    path = tmp_path / "real_data.json"
    assert kept_record(str(path), 600, CONFIG, 0.06) == {}  # no file yet
    record = {"iters": 600, "config": CONFIG, "base_lr": 0.06, "sets": {"hela": {"runs": {"planned": {}}}}}
    path.write_text(json.dumps(record))
    assert kept_record(str(path), 600, CONFIG, 0.06) == record
    assert kept_record(str(path), 600, CONFIG, 0.015) == {}  # the config's rate changed
    assert kept_record(str(path), 300, CONFIG, 0.06) == {}
    assert kept_record(str(path), 600, "configs/quickstart/InstanceFCN-VGG16-synthetic.yaml", 0.06) == {}
    # a record from before the rate was recorded does not join a run at any rate
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "base_lr"}))
    assert kept_record(str(path), 600, CONFIG, 0.06) == {}
