"""``--log tensorboard,csv``: metrics.csv and the TensorBoard event files hold exactly metrics.jsonl's records
(read back with the csv module and TensorBoard's own EventAccumulator), once each after a resume, also when
the loggers are added on resume; a logger that is not installed or not known is refused before any work."""

import csv
import json
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spikestab.cli import main
from spikestab.files import read_jsonl
from spikestab.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    task="randman",
    task_options={"n_classes": 3, "n_units": 12, "n_steps": 20, "samples_per_class": 30},
    layers=(16, 16),
    batch_size=16,
    epochs=2,
    eval_every=3,
    checkpoint_every=2,
    progress=False,
    threads=1,
)


def numbers(record: dict, prefix: str = "") -> dict[str, float | None]:
    """A record's values by flattened name (``rates.0``), written here independently of the loggers."""
    out: dict = {}
    for key, value in record.items():
        if isinstance(value, (list, dict)):
            items = enumerate(value) if isinstance(value, list) else value.items()
            out.update(numbers({str(k): v for k, v in items}, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def check_csv(out):
    """metrics.csv: one header, one row per metrics.jsonl record, every value equal."""
    records = read_jsonl(out / "metrics.jsonl")
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    header, rows = rows[0], rows[1:]
    assert header[:3] == ["kind", "epoch", "step"] and len(set(header)) == len(header)
    assert len(rows) == len(records) and all(len(r) == len(header) for r in rows)
    for record, row in zip(records, rows, strict=True):
        cells = dict(zip(header, row))
        for name, value in numbers(record).items():
            if value is None:
                assert cells[name] == ""
            elif isinstance(value, str) or isinstance(value, bool):
                assert cells[name] == str(value)
            else:
                assert float(cells[name]) == value, (name, record["step"])
        assert all(cells[name] == "" for name in set(header) - set(numbers(record)))


def check_tensorboard(out):
    """tensorboard/: one event file whose scalars are metrics.jsonl's numbers (float32), one per record."""
    records = read_jsonl(out / "metrics.jsonl")
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    seen = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    expected: dict = {}
    for record in records:
        for name, value in numbers(record).items():
            if name not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(f"{record['kind']}/{name}", []).append((record["step"], float(np.float32(value))))
    assert seen.keys() == expected.keys()
    for tag, points in expected.items():
        assert seen[tag] == points, tag
    assert {"step/loss", "step/rates.1", "eval/val_loss", "epoch/val_accuracy", "test/test_accuracy"} <= seen.keys()


def test_tensorboard_and_csv_equal_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    args = ["--config", str(config_file(tmp_path)), "--log", "tensorboard,csv", "--no-figures", "--out", str(out)]
    assert main(["train", *args]) == 0
    assert TrainConfig.from_json(out / "config.json").log == ("tensorboard", "csv")
    check_csv(out)
    check_tensorboard(out)


def config_file(tmp_path):
    """The tiny run's options as a --config file."""
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TrainConfig(**TINY).to_dict()))
    return path


class Stop(Exception):
    pass


def interrupted(out, log, at_step):
    """A run killed after optimisation step ``at_step`` (its last checkpoint at step ``at_step - 1``)."""

    def stop(trainer, step):
        if step == at_step:
            raise Stop

    with pytest.raises(Stop):
        Trainer(TrainConfig(**TINY, out=str(out), log=log), on_step=stop).fit()


@pytest.mark.parametrize("first", [("tensorboard", "csv"), ()], ids=["logged", "added-on-resume"])
def test_resume_keeps_each_record_once(tmp_path, first):
    out = tmp_path / "run"
    interrupted(out, first, at_step=5)  # checkpoint at step 4; records of step 5 are cut on resume
    cut = len(read_jsonl(out / "metrics.jsonl"))
    Trainer(TrainConfig(**TINY, out=str(out), log=("tensorboard", "csv"))).fit(resume=True)
    records = read_jsonl(out / "metrics.jsonl")
    steps = json.loads((out / "results.json").read_text())["global_steps"]
    assert cut > 5 and [r["step"] for r in records if r["kind"] == "step"] == list(range(1, steps + 1))
    check_csv(out)
    check_tensorboard(out)


def test_logger_not_installed_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what importlib finds when it is not installed
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_file(tmp_path)), "--log", "csv,tensorboard", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--log tensorboard" in err and 'pip install "spikestab[log]"' in err
    assert not out.exists()
    with pytest.raises(ValueError, match=r"spikestab\[log\]"):
        Trainer(TrainConfig(**TINY, out=str(out), log="tensorboard"))
    assert not out.exists()


@pytest.mark.parametrize("value", ["wandb", "csv,mlflow"])
def test_unknown_logger_names_the_accepted_ones(value):
    with pytest.raises(ValueError, match="log must be 'none' or a comma-separated list of tensorboard, csv"):
        TrainConfig(log=value)


def test_none_repeats_and_round_trip():
    assert TrainConfig(log="none").log == () and TrainConfig(log="csv,csv, tensorboard").log == ("csv", "tensorboard")
    assert TrainConfig.from_dict(TrainConfig(log="tensorboard,csv").to_dict()).log == ("tensorboard", "csv")
