"""``--device`` of ``spikestab train`` (issue 24), checked without a GPU: ``--device cpu`` is today's run bit
for bit, a GPU torch does not see is refused before any work, ``auto`` takes the CPU here and says so, a
checkpoint continues on another device (CPU -> CPU from a run that recorded another device, CPU -> meta),
and the device of each data-parallel rank and sweep worker."""

import json

import pytest
import torch

from spikestab.cli import main
from spikestab.files import read_jsonl
from spikestab.kernels.devices import path_for
from spikestab.models import load_model_state
from spikestab.train import Trainer
from spikestab.train.checkpoint import load_checkpoint
from spikestab.train.config import TrainConfig
from spikestab.train.device import check_ranks, kernel_path, rank_device, worker_device
from spikestab.train.distributed import backend_for
from spikestab.train.state import RunState
from spikestab.train.step import make_optimizer
from train_tiny import tiny_train

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")

TINY = tiny_train("--epochs", "2", "--lr", "5e-3", "--checkpoint-every", "2", "--no-figures")


def weights(folder, name: str) -> dict:
    """The model weights of checkpoint.pt or best.pt."""
    ck = load_checkpoint(folder / name)
    return ck["model"] if name == "checkpoint.pt" else ck


def same_run(a, b) -> None:
    """The same results, metrics (timings aside), final and best weights, bit for bit."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    for key in ("val", "test", "best_epoch", "global_steps", "epochs_done", "device", "kernel"):
        assert ra[key] == rb[key], key
    for r in (ra, rb):
        del r["stability"]["report"]["timings"]
    assert ra["stability"] == rb["stability"]
    strip = lambda recs: [{k: v for k, v in r.items() if k != "train_seconds"} for r in recs]  # noqa: E731
    assert strip(read_jsonl(a / "metrics.jsonl")) == strip(read_jsonl(b / "metrics.jsonl"))
    for name in ("checkpoint.pt", "best.pt"):
        wa, wb = weights(a, name), weights(b, name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run without --device."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_device_cpu_is_the_run_without_the_flag_bit_for_bit(tmp_path, reference):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--device", "cpu", "--out", str(out)]) == 0
    same_run(out, reference)
    res = json.loads((out / "results.json").read_text())
    assert res["device"] == "cpu" and res["kernel"] == path_for("cpu") and res["config"]["device"] == "cpu"


def test_device_auto_trains_on_the_cpu_here_and_says_so(tmp_path, capsys, reference):
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU: auto takes it")
    out = tmp_path / "run"
    assert main(["train", *TINY, "--device", "auto", "--out", str(out)]) == 0
    assert "spikestab: device auto: training on cpu (torch sees no CUDA device)" in capsys.readouterr().err
    same_run(out, reference)
    assert json.loads((out / "config.json").read_text())["device"] == "auto"  # what was asked, as asked


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_device_cuda_without_cuda_is_refused_before_any_work(tmp_path, capsys, device):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"device {device!r} asks for CUDA, but torch sees no CUDA device here; use 'cpu' or 'auto'" in err
    assert not out.exists()  # no run folder, no file


@NO_CUDA
def test_data_parallel_on_cuda_without_cuda_is_refused_before_any_process(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--device", "cuda", "--nproc", "2", "--out", str(out)]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", ""])
def test_an_unknown_device_names_the_accepted_ones(tmp_path, capsys, device):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--device", device, "--out", str(out)]) == 2
    assert f"device must be one of 'auto', 'cpu', 'cuda', 'cuda:N', got {device!r}" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_continues_on_another_device_than_it_recorded(tmp_path, capsys, monkeypatch, reference):
    """Interrupted with --device auto (config.json records "auto"), resumed with --device cpu: the device
    is not part of the run's identity, and the result is the uninterrupted run's bit for bit."""
    out = tmp_path / "run"
    step = Trainer.train_step

    def interrupted(self, *args):
        if self.global_step == 3:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    assert main(["train", *TINY, "--device", "auto", "--out", str(out)]) == 130
    monkeypatch.undo()
    assert json.loads((out / "config.json").read_text())["device"] == "auto"
    assert main(["train", "--resume", "--device", "cpu", "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["device"] == "cpu"
    same_run(out, reference)


def test_a_checkpoint_continues_on_the_meta_device(reference):
    """The run's checkpoint (written on the CPU) restored into the run's model and optimiser on ``meta``:
    read onto the CPU as resume reads it (``RunState.restore``), and read with map_location="meta" (weights
    and optimiser state): every weight, buffer and optimiser state lands on meta."""
    cfg = TrainConfig.from_json(reference / "config.json", run=True)
    for where in ("cpu", "meta"):
        trainer = Trainer(TrainConfig.from_dict({**cfg.to_dict(), "out": str(reference.parent / "other")}))
        model = trainer.model.to("meta")
        optimizer = make_optimizer(model, cfg)
        if where == "cpu":
            RunState(len(cfg.layers), trainer.state.watch).restore(
                load_checkpoint(reference / "checkpoint.pt"), model, optimizer
            )
        else:
            ck = _load(reference / "checkpoint.pt", "meta")
            load_model_state(model, ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
        tensors = [*model.parameters(), *model.buffers()]
        tensors += [t for s in optimizer.state.values() for t in s.values() if t.dim() > 0]  # "step" stays on the CPU
        assert {t.device.type for t in tensors} == {"meta"}, where
        assert len(optimizer.state) == len([p for p in model.parameters() if p.requires_grad])


def _load(path, device: str) -> dict:
    from spikestab.train.checkpoint import CHECKPOINT_CLASSES

    with torch.serialization.safe_globals(list(CHECKPOINT_CLASSES)):
        return torch.load(path, map_location=device, weights_only=True)


def test_checkpoint_and_best_hold_cpu_tensors(reference):
    """Read without map_location, every tensor of checkpoint.pt and best.pt is a CPU tensor."""

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            return [obj]
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
        return [t for item in items for t in tensors(item)]

    for name in ("checkpoint.pt", "best.pt"):
        found = tensors(_load(reference / name, None))
        assert found and {t.device.type for t in found} == {"cpu"}


def test_kernel_path_of_a_run():
    assert kernel_path("lif", torch.device("cpu"), "auto") == path_for("cpu")
    assert kernel_path("alif", torch.device("meta"), "auto") == "fused"  # any device but the CPU
    assert kernel_path("lif", torch.device("cpu"), "reference") == "reference"
    assert kernel_path("slstm", torch.device("cpu"), "auto") is None
    with pytest.raises(ValueError, match="backend 'native' runs the C loops"):
        kernel_path("lif", torch.device("meta"), "native")


def test_ranks_and_sweep_workers_on_the_cpu():
    assert rank_device("cpu", 3) == torch.device("cpu") and backend_for(torch.device("cpu")) == "gloo"
    check_ranks("cpu", 8)
    assert worker_device("cpu", 5) == "cpu"
    if not torch.cuda.is_available():
        assert rank_device("auto", 1) == torch.device("cpu") and worker_device("auto", 1) == "cpu"


@pytest.fixture
def two_gpus(monkeypatch):
    """torch's view of a machine with two GPUs (the device logic reads only these two functions)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_one_gpu_per_rank_and_sweep_workers_in_turn(two_gpus):
    assert [rank_device("cuda", r) for r in range(2)] == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert rank_device("auto", 1) == torch.device("cuda", 1) and rank_device("cuda:1", 0) == torch.device("cuda", 1)
    assert backend_for(torch.device("cuda", 1)) == "nccl"
    assert [worker_device("cuda", i) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_device("auto", 1) == "cuda:1" and worker_device("cuda:1", 0) == "cuda:1"
    check_ranks("cuda", 2)
    with pytest.raises(ValueError, match="--nproc 3 needs one GPU per process and torch sees 2"):
        check_ranks("cuda", 3)
    with pytest.raises(ValueError, match="names one GPU, but --nproc 2 needs one GPU per process"):
        check_ranks("cuda:1", 2)
    check_ranks("cuda:1", 1)


# ---------------------------------------------------------------- stabilize, demo, sweep

STABILIZE = ["stabilize", "--steps", "30", "--batch", "4", "--inputs", "12", "--layers", "2x8"]


def test_stabilize_device_cpu_is_the_report_without_the_flag(tmp_path, capsys):
    reports = []
    for extra in ([], ["--device", "cpu"]):
        path = tmp_path / f"report{len(reports)}.json"
        assert main([*STABILIZE, *extra, "--json", str(path), "--save", str(tmp_path / "m.pt")]) == 0
        report = json.loads(path.read_text())
        report.pop("config"), report.pop("timings", None)
        reports.append(report)
    assert reports[0] == reports[1]
    saved = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert {t.device.type for t in saved.values()} == {"cpu"}


def test_stabilize_device_auto_says_where(capsys):
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU: auto takes it")
    assert main([*STABILIZE, "--device", "auto"]) == 0
    assert "spikestab: device auto: training on cpu (torch sees no CUDA device)" in capsys.readouterr().err


@NO_CUDA
@pytest.mark.parametrize(
    "args",
    [
        [*STABILIZE, "--device", "cuda"],
        ["demo", "--epochs", "1", "--width", "8", "--source", "digits", "--device", "cuda"],
    ],
)
def test_stabilize_and_demo_refuse_cuda_without_cuda(tmp_path, capsys, args):
    out = tmp_path / "out"
    assert main([*args, *(["--json", str(out)] if args[0] == "stabilize" else ["--out", str(out)])]) == 2
    assert "device 'cuda' asks for CUDA, but torch sees no CUDA device here" in capsys.readouterr().err
    assert not out.exists()


def test_stabilize_refuses_an_unknown_device(capsys):
    assert main([*STABILIZE, "--device", "gpu"]) == 2
    assert "device must be one of 'auto', 'cpu', 'cuda', 'cuda:N', got 'gpu'" in capsys.readouterr().err


@NO_CUDA
def test_sweep_refuses_cuda_without_cuda_before_any_trial(tmp_path, capsys):
    from sweep_tiny import cli_args

    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--grid", "seed=0,1", *cli_args(), "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not out.exists()


def test_a_sweep_continues_on_another_device(tmp_path):
    """The device is not part of a sweep's identity: a sweep run with auto is continued with cpu; each trial
    records where it trained (auto: the CPU here)."""
    from spikestab.sweep import run_sweep
    from sweep_tiny import FIXED

    out = tmp_path / "sweep"
    fixed = {**FIXED, "epochs": 1}
    run_sweep(out, {**fixed, "device": "auto"}, {"seed": [0, 1]}, log=lambda _: None)
    summary = run_sweep(out, {**fixed, "device": "cpu"}, {"seed": [0, 1]}, log=lambda _: None)  # not refused
    assert summary["counts"]["complete"] == 2
    for trial in (out / "trials").iterdir():
        assert json.loads((trial / "results.json").read_text())["device"] == "cpu"
