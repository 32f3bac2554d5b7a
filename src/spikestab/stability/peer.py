"""``stabilize`` on models whose spiking neurons come from snnTorch, Norse or SpikingJelly: the recipe
(regime, condition D, condition G) measured on the user's own forward pass, through the adapters of
``spikestab.adapters``, and written into the libraries' own parameters (docs/bring_your_own.md).

Every quantity is measured by running the whole model, so the user's dynamics, reset, time step and
loop are the ones measured: the firing rate of a module from its recorded spikes, its BPTT gradient
growth per step from the gradient of L = <u, v_{T-1}> (its voltage after the last step) with respect to
zero perturbations added to its state at every step (:class:`spikestab.adapters.Tap`). The layers are
stabilised in the order the forward pass first calls them, each with the ones before it already set.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn

from ..adapters import PeerNeurons, Tap
from ..surrogate import SurrogateGradient
from .conditions import ConditionResult
from .drive import DAMPENING_RANGE, dampening_for_growth, g_not_applicable, threshold_for_rate
from .measure import growth_from_norms, seeded_normal
from .options import StabilizeOptions, Timings
from .regime import check_probe, recipe_options, regime_from_scan, unmeasured_regime
from .report import LayerReport, StabilityReport, rate_warning

__all__ = ["stabilize_peer", "apply_report", "PEER_CONDITIONS"]

PEER_CONDITIONS = ("D", "G")  # the conditions the adapters can apply (the paper's I-IV need spikestab layers)


class Runner:
    """Runs the user's model on a batch and records its peer neurons (eval mode, states reset first)."""

    def __init__(self, model: nn.Module, neurons: list[PeerNeurons], batch_dim: int) -> None:
        self.model, self.neurons, self.batch_dim = model, neurons, batch_dim

    def take(self, batch: Tensor, n: int) -> Tensor:
        """The first ``n`` samples of ``batch``."""
        return batch.narrow(self.batch_dim, 0, min(n, batch.shape[self.batch_dim]))

    def run(self, batch: Tensor, perturb: int | None = None) -> list[Tap]:
        """One forward pass: a tap per neuron module (module ``perturb`` perturbed, with gradients)."""
        taps = [Tap(perturb=i == perturb) for i in range(len(self.neurons))]
        for n in self.neurons:
            n.reset_state(self.model)
        with ExitStack() as stack, torch.set_grad_enabled(perturb is not None):
            for n, tap in zip(self.neurons, taps):
                stack.enter_context(n.tapped(tap))
            self.model(batch)
        return taps

    def rate(self, batch: Tensor, index: int) -> float:
        return float(self.run(batch, None)[index].z().float().mean())

    def growth(self, batch: Tensor, index: int, seed: int = 0) -> float:
        """The BPTT gradient growth per step of neuron module ``index`` (``growth_from_norms``)."""
        tap = self.run(batch, index)[index]
        if tap.voltage is None or not tap.voltage.requires_grad:
            raise ValueError(f"{self.neurons[index].name}: its voltage does not depend on its state")
        u = seeded_normal(tap.voltage.shape, torch.Generator().manual_seed(seed), tap.voltage)
        grads = torch.autograd.grad((tap.voltage * u).sum(), tap.perturbations, allow_unused=True)
        if tap.sequence:
            grads = tuple(
                g
                for seq, gs in zip(tap.perturbations, grads)
                for g in (gs.unbind(0) if gs is not None else [None] * seq.shape[0])
            )
        norms = torch.stack(
            [
                g.double().norm() if g is not None else torch.zeros((), dtype=torch.float64, device=tap.voltage.device)
                for g in grads
            ]
        )
        return growth_from_norms(norms)["growth_per_step"]


def _check_batch(model: nn.Module, batch: Tensor, batch_dim: int, name: str = "batch") -> None:
    if not isinstance(batch, Tensor):
        raise ValueError(
            f"{name} must be a tensor for a model of snnTorch, Norse or SpikingJelly neurons, "
            f"got {type(batch).__name__}"
        )
    if batch_dim not in (0, 1):
        raise ValueError(f"batch_dim must be 0 (batch first) or 1 (time first, [T, B, ...]), got {batch_dim!r}")
    if batch.dim() <= batch_dim or batch.shape[batch_dim] < 1:
        raise ValueError(
            f"{name} must have at least one sample along batch_dim={batch_dim}, got shape {tuple(batch.shape)}"
        )
    param = next(iter(model.parameters()), None)
    if param is not None and param.device != batch.device:
        raise ValueError(
            f"{name} is on {batch.device} but the model's parameters are on {param.device}: move one of them"
        )
    if batch.is_floating_point() and not torch.isfinite(batch).all():
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")


def _order(runner: Runner, batch: Tensor) -> list[PeerNeurons]:
    """The neuron modules in the order the forward pass first calls them; ValueError for a forward pass
    that fails on ``batch`` or a module it never calls."""
    order: list[int] = []
    taps = [Tap() for _ in runner.neurons]
    for n in runner.neurons:
        n.reset_state(runner.model)
    with ExitStack() as stack, torch.no_grad():
        for i, (n, tap) in enumerate(zip(runner.neurons, taps)):
            stack.enter_context(n.tapped(tap))
            stack.enter_context(_first_call(n.module, order, i))
        try:
            runner.model(batch)
        except (RuntimeError, IndexError, TypeError, ValueError) as err:
            raise ValueError(f"batch could not be run through the model: {err}") from err
    silent = [n.name for i, n in enumerate(runner.neurons) if i not in order]
    if silent:
        raise ValueError(f"the model's forward pass on this batch never calls the spiking module(s) {silent}")
    return [runner.neurons[i] for i in order]


@contextmanager
def _first_call(module: nn.Module, order: list[int], index: int) -> Iterator[None]:
    def hook(*_: object) -> None:
        if index not in order:
            order.append(index)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _regime(runner: Runner, probe: tuple[Tensor, Tensor], opts: StabilizeOptions) -> dict:
    """The recipe's regime measured on the first neuron module (``regime.regime_from_scan``)."""
    inputs, labels = probe
    _check_batch(runner.model, inputs, runner.batch_dim, "probe inputs")
    # the input's counts [T, B, ...]: batch-first sequences [B, T, ...] turned time-first, a static [B, N] one step
    if runner.batch_dim == 1:
        counts = inputs
    else:
        counts = inputs.transpose(0, 1) if inputs.dim() >= 3 else inputs.unsqueeze(0)
    check_probe(counts, labels)
    first = runner.neurons[0]
    snap = first.snapshot()
    start = float(first.threshold().mean())

    def spikes_at(factor: float) -> Tensor:
        first.set_threshold(start * factor)
        return runner.run(inputs)[0].z()

    def dense_spikes() -> Tensor:
        first.set_threshold(start)
        small = runner.take(inputs, opts.solve_batch)
        threshold_for_rate(
            lambda t: (first.set_threshold(t), runner.rate(small, 0))[1],
            first.set_threshold,
            first.threshold(),
            opts.rate,
        )
        return runner.run(inputs)[0].z()

    try:
        choice = regime_from_scan(spikes_at, dense_spikes, counts.float(), labels)
    finally:
        first.restore(snap)
    return {**choice.to_dict(), "measured": True, "summary": str(choice)}


def _surrogate(n: PeerNeurons, notes: list[str]) -> SurrogateGradient:
    """The module's SG (scalar) as G varies it: its own, or spikestab's default where its own is unknown."""
    sg = n.surrogate()
    if sg is None:
        sg = SurrogateGradient()
        notes.append(
            f"its SG is not one spikestab can read: G chose a dampening for spikestab's default SG ({sg.extra_repr()})"
        )
    return sg.with_params(dampening=sg.dampening.mean(), sharpness=sg.sharpness.mean())


def _apply_g(runner: Runner, small: Tensor, idx: int, opts: StabilizeOptions, lr: LayerReport) -> ConditionResult:
    """Condition G on neuron module ``idx``: its SG's dampening for the target growth, installed. The
    target is ``growth_ratio`` times the growth the leak alone gives, measured at the smallest dampening
    (log alpha for one decay; for a synaptic current and a membrane, what their two decays give together)."""
    n = runner.neurons[idx]
    sg = _surrogate(n, lr.notes).to(small.device)

    def growth_at(dampening: float) -> float:
        n.install(sg.with_params(dampening=torch.tensor(dampening, device=sg.dampening.device)))
        return runner.growth(small, idx)

    leak, high = growth_at(DAMPENING_RANGE[0]), growth_at(DAMPENING_RANGE[1])
    goal = opts.growth_ratio * leak
    if math.isfinite(leak) and math.isfinite(high) and abs(high - leak) < 1e-3:
        n.install(sg)
        res = g_not_applicable(goal, float(sg.dampening))
        res.fallback = "unchanged: the growth does not depend on the dampening (no recurrence, detached reset)"
        return res
    if not math.isfinite(goal):
        raise ValueError(
            f"{n.name}: the gradient over- or underflows along the sequence even at dampening "
            f"{DAMPENING_RANGE[0]:g}; condition G cannot be applied"
        )
    res = dampening_for_growth(growth_at, goal)
    res.extra["leak_growth"] = leak
    lr.notes.append(
        "G installed " + n.install(sg.with_params(dampening=torch.tensor(res.chosen, device=sg.dampening.device)))
    )
    return res


def _layer(
    runner: Runner, batch: Tensor, idx: int, conds: tuple[str, ...], opts: StabilizeOptions, timings: Timings
) -> LayerReport:
    n = runner.neurons[idx]
    small = runner.take(batch, opts.solve_batch)
    width = int(runner.run(small)[idx].z().shape[-1])
    lr = LayerReport(idx, n.kind, width, n.reset, name=n.name)
    with timings.part("apply_s"):
        if "D" in conds:
            lr.conditions.append(
                threshold_for_rate(
                    lambda t: (n.set_threshold(t), runner.rate(small, idx))[1],
                    n.set_threshold,
                    n.threshold(),
                    opts.rate,
                    opts.rate_tol,
                )
            )
        if "G" in conds:
            lr.conditions.append(_apply_g(runner, small, idx, opts, lr))
    if opts.measure:
        with timings.part("measure_s"):
            lr.measurements = {"firing_rate": runner.rate(batch, idx), "growth_per_step": runner.growth(small, idx)}
        for c in lr.conditions:
            c.measured = lr.measurements["firing_rate" if c.condition == "D" else "growth_per_step"]
        chose = "D" in conds
        warning = rate_warning(
            idx, lr.measurements["firing_rate"], "D" if chose else "open", opts.rate if chose else None
        )
        if warning:
            lr.notes.append(warning)
    lr.notes += [f"{c.condition}: {c.note}" for c in lr.conditions if c.note]
    return lr


def stabilize_peer(
    model: nn.Module,
    batch: Tensor,
    neurons: list[PeerNeurons],
    conds: tuple[str, ...],
    opts: StabilizeOptions,
    probe: tuple[Tensor, Tensor] | None,
    regime: str,
    batch_dim: int,
) -> StabilityReport:
    """``stabilize`` for ``model``'s peer ``neurons`` (found by ``adapters.find_peer_neurons``); the
    arguments are ``stabilize``'s, already validated. The model is restored exactly if anything fails."""
    if not set(conds) <= set(PEER_CONDITIONS):
        raise ValueError(
            f"on snnTorch, Norse or SpikingJelly neurons spikestab applies conditions "
            f"{list(PEER_CONDITIONS)} (the recommended recipe); the paper's conditions I-IV need "
            f"spikestab layers: got {list(conds)}"
        )
    _check_batch(model, batch, batch_dim)
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    snaps = [n.snapshot() for n in neurons]
    was_training = model.training
    model.eval()
    runner = Runner(model, neurons, batch_dim)
    report = StabilityReport(opts.mode, conds)
    timings = Timings()
    try:
        with timings.part("capture_s"):
            runner.neurons = _order(runner, batch)
        if conds == ("D", "G"):
            if regime == "auto" and probe is not None:
                report.regime = _regime(runner, probe, opts)
            else:
                report.regime = unmeasured_regime(regime)
            opts = recipe_options(opts, report.regime)
        for idx in range(len(runner.neurons)):
            report.layers.append(_layer(runner, batch, idx, conds, opts, timings))
    except BaseException:
        for n, snap in zip(neurons, snaps):
            n.restore(snap)
        model.load_state_dict(snapshot)
        raise
    finally:
        for n in neurons:
            n.reset_state(model)
        model.train(was_training)
    report.timings = timings.as_dict()
    return report


def apply_report(model: nn.Module, report: StabilityReport | dict) -> None:
    """Write the thresholds (D) and SG dampenings (G) of a ``stabilize`` report on a peer model (the
    report, or its ``to_dict()`` as saved to JSON) into ``model``, a freshly built copy of that model:
    what a ``state_dict`` does not carry (Norse's ``p``, SpikingJelly's ``v_threshold``, every library's
    SG). Load the trained ``state_dict`` afterwards. ValueError, before anything changes, when a module of
    the report is missing from ``model``."""
    from ..adapters import find_peer_neurons

    layers = report.to_dict()["layers"] if isinstance(report, StabilityReport) else report["layers"]
    neurons = {n.name: n for n in find_peer_neurons(model)}
    missing = [layer.get("name") for layer in layers if layer.get("name") not in neurons]
    if missing:
        raise ValueError(
            f"the report's spiking modules {missing} are not in the model (it has "
            f"{sorted(neurons)}): apply a report to the model it was made on"
        )
    for layer in layers:
        n, conds = neurons[layer["name"]], layer["conditions"]
        if "D" in conds:
            n.set_threshold(float(conds["D"]["chosen"]))
        if "G" in conds and not (conds["G"].get("fallback") or "").startswith("unchanged"):
            sg = _surrogate(n, [])
            n.install(sg.with_params(dampening=torch.tensor(float(conds["G"]["chosen"]), device=sg.dampening.device)))
