"""Every tensor on the model's device (issue 24), checked without a GPU in two ways that fail on a wrong line.

1. ``DeviceCheck`` records every tensor factory call (``torch.zeros``, ``empty``,
   ``ones``, ``full``, ``arange``, ``randn``, ``tensor``, ...) made directly by spikestab's own code
   without ``device=``: such a tensor lands on the CPU whatever the device of the data it is used with.
   The library names the device of every tensor it creates (the data's, or ``"cpu"`` where the tensor
   is a deliberate host value: a seeded CPU generator's draws, the C kernels' buffers), so the check
   works while everything runs on the CPU: the layers (every backend, reset, neuron type, forward and
   backward), ``stabilize`` with each condition and the recipe with its regime probe, the calibrations,
   the regularizers, a training step and a checkpoint round trip.
2. The ``meta`` device needs no hardware and, like CUDA, refuses to mix its tensors with CPU tensors
   (bar 0-dim scalars): the layers forward and backward, a training step and a checkpoint loaded with
   ``map_location`` run there with every tensor on ``meta``. (``stabilize`` reads values, which meta
   tensors do not hold, so it runs under check 1 only.)

``test_the_check_fires_*`` patch a copy of a kernel with one ``torch.zeros(...)`` that lost its device
and show that both checks fire.
"""

from __future__ import annotations

import ast
import inspect
import io
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

import spikestab
from spikestab.init.fluctuation import fluctuation_init, measure_membrane
from spikestab.init.rate import calibrate_firing_rate, train_bias_for_rate
from spikestab.kernels import fused
from spikestab.kernels.devices import PATHS, path_for, resolve_device
from spikestab.models import SNNClassifier, SNNConfig, load_model_state
from spikestab.neurons import ALIF, LIF, RESETS, SLSTM
from spikestab.neurons import slstm as slstm_module
from spikestab.neurons.cuba import CubaLIF
from spikestab.regularizers import l1_rate, l2_population
from spikestab.stability import stabilize
from spikestab.stability.stabilize import model_device, to_device
from spikestab.surrogate import SurrogateGradient
from spikestab.train import Trainer
from spikestab.train.config import TrainConfig
from test_adapters import NETS as PEER_NETS
from test_adapters import Logits
from test_adapters import data as peer_data

pytestmark = pytest.mark.usefixtures("one_thread")

LIBRARY = str(Path(spikestab.__file__).parent) + "/"
# the factory functions that create a tensor on the default device (the CPU) unless given device=
FACTORIES = (
    "arange",
    "as_tensor",
    "asarray",
    "empty",
    "empty_strided",
    "eye",
    "full",
    "linspace",
    "logspace",
    "ones",
    "rand",
    "randint",
    "randn",
    "randperm",
    "scalar_tensor",
    "tensor",
    "zeros",
)
T, B, N, H = 12, 3, 10, 8


class DeviceCheck:
    """While active, records (in ``found``, as "file:line torch.name") each call of a ``FACTORIES``
    function made directly from spikestab's source without ``device=``, outside a constructor
    (``__init__``: modules are built on the CPU and moved with ``.to``, as torch's own). ``torch.tensor``
    / ``as_tensor`` of a tensor keep its device and are not recorded.

    It replaces the functions in the ``torch`` namespace rather than using a TorchFunctionMode, because
    autograd runs backward passes without the caller's function modes: the kernels' hand-written
    backward passes would go unchecked."""

    def __init__(self) -> None:
        self.found: set[str] = set()
        self._originals = {name: getattr(torch, name) for name in FACTORIES}

    def _wrap(self, name: str):
        original = self._originals[name]

        def factory(*args, **kwargs):
            if kwargs.get("device") is None and not (args and isinstance(args[0], torch.Tensor)):
                frame = sys._getframe(1)
                path = frame.f_code.co_filename
                if path.startswith(LIBRARY) and frame.f_code.co_name != "__init__":
                    self.found.add(f"{path[len(LIBRARY) :]}:{frame.f_lineno} torch.{name}")
            return original(*args, **kwargs)

        return factory

    def __enter__(self) -> DeviceCheck:
        for name in FACTORIES:
            setattr(torch, name, self._wrap(name))
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._originals.items():
            setattr(torch, name, original)


@contextmanager
def device_checked() -> Iterator[DeviceCheck]:
    """Run the block under ``DeviceCheck``; fail, naming every line found, if the library made a tensor
    without a device."""
    with DeviceCheck() as check:
        yield check
    assert not check.found, f"tensors created without device= (they land on the CPU): {sorted(check.found)}"


def spikes(*shape: int, device: str = "cpu", rate: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return (torch.rand(shape, generator=gen) < rate).float().to(device)


def all_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Parameters, buffers and gradients of ``module`` (its SGs' dampening / sharpness included)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return [*module.parameters(), *module.buffers(), *grads]


def run_layer(layer: nn.Module, device: str) -> list[torch.Tensor]:
    """Forward (with voltages) and backward of ``layer`` on ``device``; every tensor it produced."""
    layer.to(device)
    x = spikes(T, B, layer.input_size, device=device).requires_grad_(True)
    out, volts, state = layer(x, return_voltage=True)
    (out.sum() + volts.sum() + sum(s.sum() for s in state if s is not None)).backward()
    return [out, volts, *(s for s in state if s is not None), x.grad, *all_tensors(layer)]


# ---------------------------------------------------------------- layers


LAYERS = [(cls, reset) for cls in (LIF, ALIF) for reset in RESETS]


@pytest.mark.parametrize("backend", ["auto", "fused", "reference"])
@pytest.mark.parametrize("cls,reset", LAYERS)
@pytest.mark.parametrize("checkpoint", [False, 5])
def test_lif_alif_run_on_meta(cls, reset, backend, checkpoint):
    layer = cls(N, H, reset=reset, backend=backend, detach_reset=False, checkpoint=checkpoint, learn_tau=True)
    with device_checked():
        produced = run_layer(layer, "meta")
    assert {t.device.type for t in produced} == {"meta"}


def test_learnable_surrogate_runs_on_meta():
    """A learnable SG sends every backend to the reference loop (kernels.fused.needs_reference)."""
    layer = ALIF(N, H, spike_fn=SurrogateGradient("triangular", learnable=True))
    with device_checked():
        produced = run_layer(layer, "meta")
    assert {t.device.type for t in produced} == {"meta"}


def test_native_backend_refuses_meta_with_the_reason():
    layer = LIF(N, H, backend="native").to("meta")
    with pytest.raises(RuntimeError, match="CPU float32"):
        layer(spikes(T, B, N, device="meta"))


@pytest.mark.parametrize("cls,reset", LAYERS)
@pytest.mark.parametrize("backend", ["auto", "native"])
def test_lif_alif_native_path_names_its_devices(cls, reset, backend):
    """The C path (CPU only) under the check: its buffers and CSR index too."""
    layer = cls(N, H, reset=reset, backend=backend, detach_reset=False)
    with device_checked():
        run_layer(layer, "cpu")


@pytest.mark.parametrize("recurrent", [True, False])
def test_cuba_names_its_devices(recurrent):
    """CubaLIF chooses its synaptic filter by looking at values, which meta tensors do not hold: checked
    on the CPU under the check."""
    layer = CubaLIF(N, H, recurrent=recurrent)
    with device_checked():
        run_layer(layer, "cpu")


@pytest.mark.parametrize("learnable", [False, True])
def test_slstm_runs_on_meta(learnable):
    layer = SLSTM(N, H, spike_fn=SurrogateGradient("fast-sigmoid", learnable=learnable))
    with device_checked():
        produced = run_layer(layer, "meta")
    assert {t.device.type for t in produced} == {"meta"}


# ---------------------------------------------------------------- models: training step, checkpoint


def model(net: str = "lif", hidden: tuple[int, ...] = (H, H), **kw) -> SNNClassifier:
    torch.manual_seed(4)
    return SNNClassifier(SNNConfig(N, 3, hidden_sizes=hidden, net=net, dropout=0.0, **kw))


@pytest.mark.parametrize("net", ["lif", "alif", "slstm"])
def test_training_step_on_meta(net):
    """Forward, loss (cross entropy plus the sparsity losses), backward and an optimiser step: all on meta."""
    m = model(net).to("meta")
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    x, y = spikes(T, B, N, device="meta"), torch.zeros(B, dtype=torch.long, device="meta")
    with device_checked():
        run = m.simulate(x)
        loss = nn.functional.cross_entropy(run.logits.mean(0), y)
        loss = loss + l1_rate(run.spikes[0], target=0.1) + l2_population(run.spikes[-1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {t.device.type for t in all_tensors(m)} == {"meta"}


def test_checkpoint_saved_on_one_device_loads_on_another():
    """A model's state (a stabilised one: per-neuron SG buffers) saved from the CPU, loaded with
    map_location onto meta into a model there, runs there; loaded back onto the CPU it gives the same
    output as before."""
    source = model()
    stabilize(source, spikes(40, 4, N, rate=0.1), conditions="III", mode="paper")
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    x = spikes(T, B, N)
    expected = source(x)

    buffer.seek(0)
    state = torch.load(buffer, map_location="meta", weights_only=True)
    assert {t.device.type for t in state.values()} == {"meta"}
    target = model().to("meta")
    load_model_state(target, state)
    assert {t.device.type for t in all_tensors(target)} == {"meta"}
    with device_checked():
        assert target(x.to("meta")).device.type == "meta"

    buffer.seek(0)
    back = model()
    load_model_state(back, torch.load(buffer, map_location="cpu", weights_only=True))
    assert torch.equal(back(x), expected)


def test_a_reshaped_buffer_loads_on_the_model_device():
    """``load_model_state`` of a stabilised state read onto the CPU (per-neuron SG buffers, which replace the
    model's scalar ones) into a model on another device: the new buffers are made there."""
    source = model()
    stabilize(source, spikes(40, 4, N, rate=0.1), conditions="III", mode="paper")
    target = model().to("meta")
    load_model_state(target, source.state_dict())
    assert {t.device.type for t in all_tensors(target)} == {"meta"}


def test_trainer_run_and_resume_name_their_devices(tmp_path):
    """A Trainer's run (stabilisation, training steps with the sparsity loss, evaluation, checkpoints,
    best.pt, results) and its resume from the checkpoint make every tensor on the model's device (the
    models are built outside the check: modules are built on the CPU and moved)."""
    options = dict(n_classes=3, n_units=N, n_steps=T, samples_per_class=20)
    cfg = TrainConfig(
        task="randman",
        task_options=options,
        layers=(H, H),
        epochs=1,
        batch_size=16,
        out=str(tmp_path / "run"),
        progress=False,
        checkpoint_every=2,
        sparsity="l1_rate:0.05:linear",
    )
    trainer = Trainer(cfg, log=lambda _: None)
    with device_checked():
        trainer.fit()
    more = Trainer(TrainConfig.from_dict({**cfg.to_dict(), "epochs": 2}), log=lambda _: None)
    with device_checked():
        assert more.fit(resume=True)["epochs_done"] == 2


# ---------------------------------------------------------------- stabilize, calibration


# every condition in each mode it takes (D and G are measured only)
CONDITION_MODES = [(c, "measured") for c in ("D", "I", "II", "III", "IV", "G")] + [
    (c, "paper") for c in ("I", "II", "III", "IV")
]


@pytest.mark.parametrize("net", ["lif", "alif"])
@pytest.mark.parametrize("condition,mode", CONDITION_MODES)
def test_stabilize_names_its_devices(condition, mode, net):
    m = model(net)
    with device_checked():
        stabilize(m, spikes(30, 4, N, rate=0.1), conditions=condition, mode=mode)


def test_stabilize_without_recurrent_weights_names_its_devices():
    m = model(recurrent=False)
    with device_checked():
        stabilize(m, spikes(30, 4, N, rate=0.1), conditions="I II IV G", mode="measured")


def test_condition_iv_for_the_tail_names_its_devices():
    m = model(surrogate="q-pseudospike")
    with device_checked():
        stabilize(m, spikes(30, 4, N, rate=0.1), conditions="IV", solve_for="tail")


def test_recipe_with_its_regime_probe_names_its_devices():
    m = model()
    probe = (spikes(30, 64, N, rate=0.1), torch.arange(64) % 3)
    with device_checked():
        report = stabilize(m, spikes(30, 4, N, rate=0.1), probe=probe)
    assert report.regime["measured"]


@pytest.mark.parametrize(
    "name", ["snntorch-rleaky", "norse-lsnnrecurrentcell", "norse-lifrecurrent", "spikingjelly-container"]
)
def test_peer_model_recipe_names_its_devices(name):
    """The recipe on snnTorch, Norse and SpikingJelly models (test_adapters' networks, one per adapter and
    kind of loop): spikestab's lines of the peer path and the adapters."""
    torch.manual_seed(0)
    net = Logits(PEER_NETS[name][0]())
    with device_checked():
        stabilize(net, peer_data())


def test_calibrations_name_their_devices():
    x = spikes(30, 4, N, rate=0.1)
    first, second = model(), model()
    with device_checked():
        calibrate_firing_rate(first, x, rate=0.1, per_neuron=True, max_iter=6)
        train_bias_for_rate(second, x, rate=0.1, steps=2)
    cuba = model("cuba", hidden=(H,))
    with device_checked():
        report = fluctuation_init(cuba, nu=0.1, sigma_u=1.0, match_moments=True, generator=torch.Generator())
        measure_membrane(cuba, x, report)


# ---------------------------------------------------------------- the checks themselves


def patched(func, old: str, new: str):
    """A copy of ``func`` (a function, or a decorated method as its class holds it) whose source has
    ``old`` replaced by ``new``, compiled under the function's own file name and line numbers, so that
    the check attributes it to the library's line."""
    lines, start = inspect.getsourcelines(func)
    source = textwrap.dedent("".join(lines))
    assert source.count(old) == 1, f"{old!r} is not (once) in {func.__qualname__}"
    tree = ast.parse(source.replace(old, new))
    ast.increment_lineno(tree, start - 1)
    namespace = dict(func.__globals__)
    exec(compile(tree, inspect.getsourcefile(func), "exec"), namespace)
    return namespace[func.__name__]


def _without_device_in_fused_backward(monkeypatch) -> None:
    """The fused kernel's backward with its zero state made by torch.zeros without device=."""
    backward = fused.FusedSequence.__dict__["backward"].__func__
    copy = patched(backward, "volts.new_zeros(volts.shape[1:])", "torch.zeros(volts.shape[1:])")
    monkeypatch.setattr(fused.FusedSequence, "backward", copy)


def _without_device_in_slstm_state(monkeypatch) -> None:
    """sLSTM's zero state with its ``device=`` removed."""
    copy = patched(slstm_module.SLSTM.initial_state, ", device=like.device", "")
    monkeypatch.setattr(slstm_module.SLSTM, "initial_state", copy)


BROKEN = {
    "fused backward": (
        _without_device_in_fused_backward,
        lambda: ALIF(N, H, backend="fused", learn_tau=True),  # the zero state is used: the decay's gradient
        "kernels/fused.py",
    ),
    "slstm state": (_without_device_in_slstm_state, lambda: SLSTM(N, H), "neurons/slstm.py"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_check_fires_on_a_tensor_without_device(case, monkeypatch):
    """On the CPU the broken copy computes the right numbers; DeviceCheck still names its line."""
    breaks, make, where = BROKEN[case]
    breaks(monkeypatch)
    layer = make()
    with DeviceCheck() as check:
        run_layer(layer, "cpu")
    assert any(f.startswith(where) and f.endswith("torch.zeros") for f in check.found), check.found


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_meta_run_fails_on_a_tensor_without_device(case, monkeypatch):
    breaks, make, _ = BROKEN[case]
    run_layer(make(), "meta")  # intact: runs
    breaks(monkeypatch)
    with pytest.raises(RuntimeError, match="device"):
        run_layer(make(), "meta")


# ---------------------------------------------------------------- device= in the Python API


def test_path_for_names_the_kernel_of_each_device_and_dtype():
    assert path_for("cpu", torch.float32) == "native"  # the native library is built in the test environment
    assert path_for("cuda", torch.float32) == "fused"
    assert path_for(torch.device("cpu"), torch.float64) == "fused"
    assert path_for("meta", torch.float32, "reference") == "reference"
    assert path_for("cuda:1", torch.bfloat16, "fused") == "fused"
    assert set(PATHS) == {"native", "fused", "reference"}
    with pytest.raises(ValueError, match="CPU float32"):
        path_for("cuda", torch.float32, "native")
    with pytest.raises(ValueError, match="backend must be one of"):
        path_for("cpu", torch.float32, "gpu")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("meta") == torch.device("meta")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            resolve_device("cuda:0")


def test_stabilize_on_an_explicit_device_equals_following_the_model():
    x = spikes(30, 4, N, rate=0.1)
    a, b = model(), model()
    ra = stabilize(a, x, conditions="D G")
    rb = stabilize(b, x, conditions="D G", device="cpu")
    assert ra.to_dict()["layers"] == rb.to_dict()["layers"]
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no CUDA device")
def test_stabilize_refuses_a_missing_device_before_any_work():
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        stabilize(m, spikes(30, 4, N), device="cuda")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_stabilize_refuses_a_batch_elsewhere_than_the_model():
    """Without device= everything runs where the model is: a batch or probe on another device is refused,
    naming both, before any work."""
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="batch is on meta but the model is on cpu"):
        stabilize(m, spikes(30, 4, N, device="meta"))
    probe = (spikes(30, 64, N, device="meta"), torch.arange(64, device="meta") % 3)
    with pytest.raises(ValueError, match="probe is on meta but the model is on cpu"):
        stabilize(m, spikes(30, 4, N), probe=probe)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_to_device_moves_every_tensor_of_a_batch():
    """What ``stabilize(..., device=)`` does with the batch: every tensor of a nested batch moved."""
    batch = (spikes(T, B, N), {"labels": torch.arange(B)}, [torch.zeros(2)], "name")
    moved = to_device(batch, torch.device("meta"))
    assert moved[0].is_meta and moved[1]["labels"].is_meta and moved[2][0].is_meta and moved[3] == "name"


def test_model_device_refuses_a_model_on_several_devices():
    m = model()
    assert model_device(m) == torch.device("cpu")
    m.stack.layers[1].to("meta")
    with pytest.raises(ValueError, match="several devices"):
        model_device(m)
