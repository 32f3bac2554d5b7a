"""``stabilize``: apply stability conditions layer by layer to a built model, in place, and verify each
one by measurement (docs/theory.md, "The conditions"). The paper's conditions I-IV are available exactly as
published (paper and measured modes); without ``conditions`` the recommended recipe ``RECIPE`` runs
(conditions D and G of ``spikestab.stability.drive``, chosen from measured training outcomes)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..adapters import SUPPORTED, find_peer_neurons
from ..dynamics import NeuronState
from ..kernels.devices import resolve_device
from ..neurons.layers import SpikingNeurons, spiking_layers
from .conditions import (
    III_VARIANTS,
    SOLVE_FOR,
    ConditionResult,
    TransitionTerms,
    check_rate,
    condition_iii,
    condition_iv,
    paper_voltage_bounds,
)
from .drive import GROWTH_RATIO, condition_d, condition_g
from .measure import Trace, layer_input, measure_layer, record
from .options import StabilizeOptions, Timings
from .peer import stabilize_peer
from .recurrent import apply_i_ii
from .regime import (
    RegimeChoice,
    check_probe,
    choose_regime,
    recipe_options,
    unmeasured_regime,
    validate_regime,
)
from .report import MEASURED_BY, LayerReport, StabilityReport, rate_warning

__all__ = [
    "stabilize",
    "CHOOSES",
    "CONDITIONS",
    "PAPER_CONDITIONS",
    "RECIPE",
    "MODES",
    "StabilizeOptions",
    "resolve_conditions",
]

PAPER_CONDITIONS = ("I", "II", "III", "IV")
CONDITIONS = ("D", "I", "II", "III", "IV", "G")  # every condition, in the order stabilize applies them
RECIPE = ("D", "G")  # the recommended recipe: `conditions=None`, "auto" on the command line
# the parameter each condition chooses (IV: the tail instead with solve_for="tail"); a value the user set is
# kept by leaving its condition out of the recipe (``spikestab train`` does, ``TrainConfig.user_set``)
CHOOSES = {"D": "threshold", "III": "dampening", "IV": "sharpness", "G": "dampening"}
MODES = ("paper", "measured")


@contextmanager
def _replaying(traces: dict[SpikingNeurons, Trace]):
    """While active, a sequence layer called on exactly the input of its recorded ``Trace`` (from the
    zero state, no voltages asked) returns the recorded output instead of running again, so capturing
    the input of layer k runs only layer k-1. ``record`` uses the layer's own kernel path, so the
    replayed spikes are the ones the layer would compute."""
    patched = []
    for layer, tr in traces.items():
        if layer.batch_first:
            continue

        def forward(x, state=None, return_voltage=False, _layer=layer, _tr=tr, _orig=layer.forward):
            if (
                state is None
                and not return_voltage
                and isinstance(x, Tensor)
                and x.shape == _tr.x.shape
                and torch.equal(x, _tr.x)
            ):
                final = NeuronState(_tr.v[-1], _tr.z[-1], _tr.a[-1] if _tr.a is not None else None)
                return _tr.z, final
            return _orig(x, state, return_voltage)

        layer.forward = forward
        patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.forward


def _check_finite_model(layers: list[SpikingNeurons]) -> None:
    for i, layer in enumerate(layers):
        for name, t in list(layer.named_parameters()) + list(layer.named_buffers()):
            if t is not None and t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(
                    f"spiking layer {i} has non-finite values (NaN or inf) in {name}; stabilize needs finite weights"
                )


def resolve_conditions(conditions: Iterable[str] | str | None) -> tuple[str, ...]:
    """The conditions named by ``conditions`` in application order: None or "auto" is ``RECIPE``; a
    string is split at commas or spaces. Raises ValueError for unknown names, an empty selection, and
    III together with G (both choose the dampening)."""
    if conditions is None:
        conditions = RECIPE
    if isinstance(conditions, str):
        conditions = [c for c in conditions.replace(",", " ").split() if c]
    conds = tuple(conditions)
    if conds == ("auto",):
        conds = RECIPE
    bad = [c for c in conds if c not in CONDITIONS]
    if bad or not conds:
        raise ValueError(f"conditions must be 'auto' or a non-empty subset of {list(CONDITIONS)}, got {list(conds)}")
    if "III" in conds and "G" in conds:
        raise ValueError("conditions III and G both choose the SG dampening: apply one of them, not both")
    return tuple(c for c in CONDITIONS if c in conds)


def _validate(
    model: nn.Module, conditions: Iterable[str] | str | None, opts: StabilizeOptions
) -> tuple[list[SpikingNeurons], tuple[str, ...]]:
    """The model's spikestab spiking layers (none for a model of other libraries' neurons) and the
    conditions to apply; ValueError for any bad argument, before anything changes."""
    if opts.mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {opts.mode!r}")
    conds = resolve_conditions(conditions)
    if opts.mode == "paper" and not set(conds) & set(PAPER_CONDITIONS):
        raise ValueError(
            f"mode 'paper' applies to the paper's conditions {list(PAPER_CONDITIONS)}; conditions {list(conds)} "
            "are measured only: leave mode at 'measured' or add one of the paper's conditions"
        )
    check_rate(opts.rate)
    if opts.sparse_rate is not None:
        check_rate(opts.sparse_rate, "sparse_rate")
    solve_for = opts.solve_for
    if solve_for not in SOLVE_FOR:
        raise ValueError(f"solve_for must be 'sharpness' or 'tail', got {solve_for!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = spiking_layers(model)
    if not layers:
        return layers, conds
    if solve_for == "tail" and "IV" in conds:
        shapes = {layer.spike_fn.shape for layer in layers}
        if shapes != {"q-pseudospike"}:
            raise ValueError(f"solve_for='tail' needs q-pseudospike SGs in every layer, got {sorted(shapes)}")
    _check_finite_model(layers)
    if opts.variant not in III_VARIANTS:
        raise ValueError(f"iii_variant must be one of {sorted(III_VARIANTS)}, got {opts.iii_variant!r}")
    if opts.solve_batch < 1:
        raise ValueError(f"solve_batch must be >= 1, got {opts.solve_batch}")
    return layers, conds


def _peers(model: nn.Module, layers: list[SpikingNeurons], batch_dim: int) -> list:
    """The adapters of ``model``'s neurons of other libraries (none for a spikestab model); ValueError for a
    model mixing both kinds, for one without spiking layers, and for ``batch_dim`` on a spikestab model."""
    peers = find_peer_neurons(model)
    if peers and layers:
        raise ValueError(
            f"model mixes spikestab spiking layers with other libraries' neurons ({peers[0].name}: "
            f"{peers[0].kind}): stabilise a model of one kind"
        )
    if not peers and not layers:
        listed = "; ".join(f"{lib} {', '.join(classes)}" for lib, classes in SUPPORTED.items())
        raise ValueError(
            f"model must contain at least one spiking layer: spikestab's (LIF, ALIF, LIFCell, "
            f"ALIFCell, ...) or another library's ({listed})"
        )
    if layers and batch_dim != 1:
        raise ValueError(
            f"batch_dim applies to models of other libraries' neurons; spikestab layers take "
            f"[T, B, ...] (or batch_first=True), got batch_dim={batch_dim!r}"
        )
    return peers


def model_device(model: nn.Module) -> torch.device:
    """The one device of ``model``'s parameters and buffers (the CPU for a model without any); ValueError
    for a model spread over several devices."""
    devices = {t.device for t in (*model.parameters(), *model.buffers())}
    if len(devices) > 1:
        raise ValueError(
            f"model has tensors on several devices ({', '.join(sorted(map(str, devices)))}): move it to one "
            "(model.to(device)) or pass device="
        )
    return devices.pop() if devices else torch.device("cpu")


def to_device(batch, device: torch.device):
    """``batch`` (a tensor, or tuples / lists / dicts of them) with every tensor on ``device``; anything
    else unchanged."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        moved = [to_device(b, device) for b in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _tensors(batch) -> list[Tensor]:
    """Every tensor of ``batch`` (a tensor, or tuples / lists / dicts of them)."""
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, (tuple, list)):
        return [t for b in batch for t in _tensors(b)]
    if isinstance(batch, dict):
        return [t for b in batch.values() for t in _tensors(b)]
    return []


def check_on(batch, device: torch.device, name: str) -> None:
    """ValueError, naming both devices, when a tensor of ``batch`` is not on the model's ``device``."""
    for t in _tensors(batch):
        if t.device != device:
            raise ValueError(
                f"{name} is on {t.device} but the model is on {device}: move one of them, or pass device= to move both"
            )


def _first_input(model: nn.Module, batch, first: SpikingNeurons) -> Tensor:
    """The first spiking layer's input on ``batch``; ValueError for a batch the conditions cannot be solved
    on: one that does not run, an empty one (no time step or no sample), another dtype than the layer's
    (the layer converts spikes itself, the conditions' simulations do not), NaN or inf."""
    try:
        x = layer_input(model, batch, 0)
    except (RuntimeError, IndexError, TypeError) as err:
        raise ValueError(f"batch could not be run through the model: {err}") from err
    if x.numel() == 0:
        raise ValueError(
            f"batch is empty: the first spiking layer receives shape {tuple(x.shape)}; the conditions need at "
            "least one time step and one sample"
        )
    dtype = first.weight_ih.dtype
    if x.dtype != dtype:
        call = "batch.float()" if dtype == torch.float32 else f"batch.to({dtype})"
        raise ValueError(
            f"batch reaches the first spiking layer as {x.dtype} but the layer computes in {dtype}: pass "
            f"{call}, or convert the model with model.to({x.dtype})"
        )
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("batch must be finite: the first spiking layer receives NaN or inf")
    return x


def _check_peer_batch(batch, batch_dim: int) -> None:
    """ValueError for a batch of another library's model without a sample or a time step."""
    if isinstance(batch, Tensor) and batch.dim() >= 2 and batch.numel() == 0:
        raise ValueError(
            f"batch is empty (shape {tuple(batch.shape)}, samples along dim {batch_dim}): the conditions "
            "need at least one time step and one sample"
        )


def _apply_iii(layer: SpikingNeurons, variant: str, timings: Timings) -> ConditionResult:
    """Condition III: the per-neuron dampening from the weights alone."""
    w, mask = layer.recurrent_weight(), layer.recurrent_mask
    if w is None or mask is None or not bool(mask.any()):
        return ConditionResult(
            "III",
            "worst-case transition gain",
            1.0,
            "dampening",
            layer.spike_fn.dampening.mean().item(),
            True,
            note="no recurrent weights: the gain is alpha < 1 for any dampening; unchanged",
        )
    with timings.part("conditions_s"):
        res = condition_iii(w.detach(), layer.alpha.detach(), layer.threshold.detach(), layer.reset, variant=variant)
    layer.spike_fn = layer.spike_fn.with_params(
        dampening=torch.as_tensor(res.chosen, device=layer.spike_fn.dampening.device).clone()
    )
    return res


def _iv_inputs(layer: SpikingNeurons, w: Tensor, trace: Trace | None) -> dict:
    """Condition IV's voltage model: the paper's uniform bounds, or the terms of a recorded run."""
    alpha, thr = layer.alpha.detach(), layer.threshold.detach()
    if trace is None:
        return {"bounds": paper_voltage_bounds(layer.weight_ih.detach(), w, alpha, thr, layer.reset)}
    return {
        "terms": TransitionTerms.from_trace(
            trace,
            w,
            alpha,
            layer.reset,
            layer.detach_reset,
            rho=layer.rho if layer.adaptive else None,
            beta_adapt=layer.beta_adapt if layer.adaptive else None,
        )
    }


def _iv_note(res: ConditionResult, solve_for: str, with_iii: bool) -> str:
    """What an infeasible condition IV reached, and whether condition III's dampening is why."""
    best, value = res.extra["best_gain"], res.chosen
    prefix = f"{res.note}; " if res.note else ""
    if with_iii and best < 1.0:
        return prefix + (
            f"III and IV conflict: with III's dampening the best reachable mean-square gain is "
            f"{best:.4g} (at {solve_for} {value:.4g})"
        )
    return prefix + f"no root in the bracket: best reachable mean-square gain {best:.4g} (at {solve_for} {value:.4g})"


def _apply_iv(
    layer: SpikingNeurons,
    xs: Tensor,
    opts: StabilizeOptions,
    with_iii: bool,
    timings: Timings,
    trace: Trace | None = None,
) -> ConditionResult:
    """Condition IV: the sharpness (or tail) for a unit mean-square transition gain."""
    w = layer.recurrent_weight()
    w = layer.weight_ih.new_zeros(layer.hidden_size, layer.hidden_size) if w is None else w.detach()
    if opts.mode == "measured" and trace is None:
        trace = record(layer, xs)
    with timings.part("conditions_s"):
        res = condition_iv(
            layer.spike_fn,
            w,
            layer.alpha.detach(),
            layer.threshold.detach(),
            layer.reset,
            solve_for=opts.solve_for,
            detach_reset=layer.detach_reset,
            **_iv_inputs(layer, w, trace),
        )
    if opts.solve_for == "sharpness":
        layer.spike_fn = layer.spike_fn.with_params(
            sharpness=torch.tensor(float(res.chosen), device=layer.spike_fn.sharpness.device)
        )
    else:
        layer.spike_fn = layer.spike_fn.with_params(tail=float(res.chosen))
    if not res.feasible:
        res.note = _iv_note(res, opts.solve_for, with_iii)
    return res


def _apply_conditions(
    layer: SpikingNeurons,
    xs: Tensor,
    idx: int,
    conds: tuple[str, ...],
    opts: StabilizeOptions,
    timings: Timings,
    slope_hint: float | None,
) -> tuple[list[ConditionResult], float | None]:
    """Every condition of ``conds`` on one layer, in order, from its input ``xs`` (the solve batch)."""
    rate, rate_tol, growth_ratio = opts.rate, opts.rate_tol, opts.growth_ratio
    results: list[ConditionResult] = []
    trace = None
    if "D" in conds:
        with timings.part("conditions_s"):
            results.append(condition_d(layer, xs, rate=rate, rate_tol=rate_tol))
    if "I" in conds or "II" in conds:
        found, trace, slope_hint = apply_i_ii(layer, xs, conds, opts, idx, timings, slope_hint)
        results += found
    if "III" in conds:
        results.append(_apply_iii(layer, opts.variant, timings))
    if "IV" in conds:
        results.append(_apply_iv(layer, xs, opts, "III" in conds, timings, trace))
    if "G" in conds:
        with timings.part("conditions_s"):
            results.append(condition_g(layer, xs, ratio=growth_ratio))
    return results, slope_hint


def _verify(layer: SpikingNeurons, x: Tensor, lr: LayerReport, opts: StabilizeOptions, full: Trace) -> None:
    """Measure every targeted quantity on the whole batch and attach each to its condition."""
    lr.measurements = measure_layer(layer, x, opts.jacobian_steps, opts.solve_batch, trace=full)
    for c in lr.conditions:
        c.measured = lr.measurements.get(MEASURED_BY[c.condition])
    chose = any(c.condition == "D" for c in lr.conditions)
    warning = rate_warning(
        lr.index, lr.measurements["firing_rate"], "D" if chose else "open", opts.rate if chose else None
    )
    if warning:
        lr.notes.append(warning)


def _stabilize_layers(
    model: nn.Module,
    batch,
    layers: list[SpikingNeurons],
    conds: tuple[str, ...],
    opts: StabilizeOptions,
    report: StabilityReport,
    timings: Timings,
) -> None:
    """Layer by layer: capture the input (the layers below replayed from their records), apply the
    conditions on the solve batch, record the output on the whole batch, verify."""
    replay: dict[SpikingNeurons, Trace] = {}
    slope_hint = None
    for idx, layer in enumerate(layers):
        with timings.part("capture_s"), _replaying(replay):
            x = layer_input(model, batch, idx)
        lr = LayerReport(idx, type(layer).__name__, layer.hidden_size, layer.reset)
        with timings.part("apply_s"):
            lr.conditions, slope_hint = _apply_conditions(
                layer, x[:, : opts.solve_batch], idx, conds, opts, timings, slope_hint
            )
        if opts.measure or idx + 1 < len(layers):
            with timings.part("capture_s"):
                replay[layer] = record(layer, x)  # the layer's output on the whole batch: the next layer's input
        if opts.measure:
            with timings.part("measure_s"):
                _verify(layer, x, lr, opts, replay[layer])
        lr.notes += [f"{c.condition}: {c.note}" for c in lr.conditions if c.note]
        report.layers.append(lr)


def _restore(model: nn.Module, layers: list[SpikingNeurons], spike_fns: list, snapshot: dict[str, Tensor]) -> None:
    """Put ``model`` back as it was before ``stabilize``: the layers' SGs, then every tensor of ``snapshot``
    copied in place, as ``load_state_dict`` does but in time linear in the layers (its per-module scan of
    every key took minutes for thousands of layers, so that a Ctrl-C seemed ignored)."""
    for layer, fn in zip(layers, spike_fns):
        layer.spike_fn = fn
    current = model.state_dict(keep_vars=True)
    if current.keys() != snapshot.keys() or any(current[k].shape != v.shape for k, v in snapshot.items()):
        model.load_state_dict(snapshot)  # a tensor replaced by one of another shape: the checked load
        return
    with torch.no_grad():
        for key, value in snapshot.items():
            current[key].copy_(value)


def _check_recipe_options(conds: tuple[str, ...], probe, regime: str, peers: bool) -> None:
    """ValueError for a probe or a regime that would be ignored: both set the targets of the recipe's
    conditions D and G, applied together or one alone (the other parameter kept, see ``CHOOSES``); the probe
    measures the regime by D's threshold scan, so it needs D; other libraries' neurons take them with the
    whole recipe only."""
    if probe is None and regime == "auto":
        return
    whole = list(RECIPE) if peers else f"{list(RECIPE)} (or one of them)"
    if not set(conds) <= set(RECIPE) or (peers and conds != RECIPE):
        raise ValueError(
            f"probe and regime apply to the recommended recipe {whole} only, not to conditions {list(conds)}"
        )
    if probe is not None and "D" not in conds:
        raise ValueError(
            f"probe measures the recipe's regime by condition D's threshold scan, and conditions {list(conds)} "
            "keep the threshold: leave the probe out (the dense start) or force regime='dense' or 'sparse'"
        )
    if not (isinstance(probe, (tuple, list)) and len(probe) == 2) and probe is not None:
        raise ValueError(f"probe must be a pair (inputs [T, B, ...], labels [B]), got {type(probe).__name__}")


def _recipe_regime(
    model: nn.Module, first: SpikingNeurons, opts: StabilizeOptions, probe: tuple[Tensor, Tensor] | None, regime: str
) -> tuple[StabilizeOptions, dict]:
    """The recipe's options for its regime (measured, forced, or dense for want of a probe) and the report's
    regime entry."""
    entry: dict
    if regime == "auto" and probe is not None:
        choice: RegimeChoice = choose_regime(model, first, *probe, dense_rate=opts.rate, solve_batch=opts.solve_batch)
        regime = choice.regime
        entry = {**choice.to_dict(), "measured": True, "summary": str(choice)}
    else:
        entry = unmeasured_regime(regime)
    return recipe_options(opts, entry), entry


def stabilize(
    model: nn.Module,
    batch,
    conditions: Iterable[str] | str | None = None,
    mode: str = "measured",
    *,
    rate: float = 0.5,
    growth_ratio: float = GROWTH_RATIO,
    solve_for: str = "sharpness",
    iii_variant: str | None = None,
    rate_tol: float = 0.01,
    ratio_tol: float = 0.1,
    max_rounds: int = 8,
    solve_batch: int = 8,
    measure: bool = True,
    jacobian_steps: int = 4,
    probe: tuple[Tensor, Tensor] | None = None,
    regime: str = "auto",
    sparse_rate: float | None = None,
    batch_dim: int = 1,
    device: torch.device | str | None = None,
) -> StabilityReport:
    """Apply stability conditions to every spiking layer of ``model``, in place, layer by layer, and
    measure what each achieved. Returns a :class:`StabilityReport`. ``conditions=None`` (or "auto")
    applies the recommended recipe ``RECIPE`` = D, G.

    ``batch`` is what the model's forward takes (x [T, B, N] for ``SNNClassifier``, tokens [T, B] for
    ``SNNLanguageModel``). Each layer's input statistics come from the layer below as already stabilised
    (captured with forward hooks, dropout off). Conditions (docs/theory.md):

    - I: recurrent-weight mean for an initial firing rate ``rate`` (1/2 in the paper);
    - II: recurrent-weight variance equalising the recurrent and input current variances;
    - III: per-neuron dampening so the worst-case transition gain is at most 1 (variant ``iii_variant``:
      "c" by default in paper mode, "bounded" (guaranteed) in measured mode, or "mean");
    - IV: sharpness (``solve_for="sharpness"``, any SG shape) or tail q (``"tail"``, q-PseudoSpike) for a
      mean-square transition gain of 1;
    - D (first, spikestab's): one threshold per layer for an initial firing rate ``rate`` (root find on
      the simulated layer), so that the rate comes from the drive the layer receives;
    - G (last, spikestab's): one dampening per layer for a measured BPTT gradient growth per step of
      ``growth_ratio * mean(log alpha)`` (the leak's own decay times 0.6 by default). Not with III.

    The recommended recipe starts either dense (D at ``rate``, G at ``growth_ratio``) or sparse (D at
    ``sparse_rate``, by default ``regime.TIMING_SPARSE_RATE`` = 0.003 where the probe finds a timing code
    and ``regime.SPARSE_RATE`` = 0.03 otherwise; G at ``regime.SPARSE_GROWTH_RATIO`` = 0.9).
    ``regime="auto"`` chooses by measurement when ``probe`` = (inputs [T, B, ...], labels [B]), a few
    hundred labelled training samples, is given (``regime.choose_regime``: the dense start is kept if its
    first layer's spike counts stay nearly as readable as at the best threshold), and starts dense without
    one; "dense" or "sparse" force it. ``probe`` and ``regime`` apply to the recipe only: to D and G
    together, or to one of them alone when the parameter the other chooses is to be kept as the model has
    it (``CHOOSES``; e.g. ``conditions=("D",)`` keeps the dampening the user set, as ``spikestab train``
    does with ``--dampening``); the probe measures by D's threshold scan, so it needs D. ``mode="paper"`` needs one of
    the paper's conditions (D and G are measured only).

    ``model`` may instead hold spiking neurons of snnTorch, Norse or SpikingJelly (``adapters.SUPPORTED``)
    mixed with any torch layers: the recipe (conditions D and G, and the regime) is then measured on the
    model's own forward pass and written into those libraries' own thresholds and SGs
    (``stability.peer``; docs/bring_your_own.md). ``batch`` (and the probe's inputs) must then be a tensor
    whose samples lie along ``batch_dim`` (1: time first, [T, B, ...]; 0: batch first).

    ``device``: where everything runs (the captures, the regime probe, the conditions' simulations and the
    measurements). None follows the model: its parameters' device (one device; ValueError for a model
    spread over several), where ``batch`` and ``probe`` must be too (ValueError naming both devices
    otherwise). Given ("cpu", "cuda", "cuda:N", "auto" or a ``torch.device``;
    ``kernels.devices.resolve_device``), the model, ``batch`` and ``probe`` are moved there first (the
    model in place).

    ``mode="paper"`` uses the official code's formulas (per-neuron means for I); ``mode="measured"`` takes
    expectations over the recorded dynamics and iterates I/II on the simulated network until the measured
    rate is within ``rate_tol`` and the variance ratio within a factor ``1 + ratio_tol`` (root finds use
    the first ``solve_batch`` samples; the reported measurements use the whole batch). In measured mode
    condition I gives every neuron the same recurrent mean, so that I moves the mean of the recurrent
    current and II its spread across neurons, independently. Bad input raises ValueError
    before anything changes; if anything fails midway the model is restored exactly.

    Examples:
        >>> from spikestab.models import SNNClassifier, SNNConfig
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = SNNClassifier(SNNConfig(40, 5, hidden_sizes=(64,), dropout=0.0))
        >>> x = (torch.rand(100, 4, 40) < 0.1).float()
        >>> report = stabilize(model, x, conditions=("I", "II"))
        >>> abs(report.layers[0].measurements["firing_rate"] - 0.5) < 0.05
        True
        >>> stabilize(model, x).conditions   # the recommended recipe
        ('D', 'G')
    """
    opts = StabilizeOptions(
        mode,
        rate,
        growth_ratio,
        solve_for,
        iii_variant,
        rate_tol,
        ratio_tol,
        max_rounds,
        solve_batch,
        measure,
        jacobian_steps,
        sparse_rate,
    )
    layers, conds = _validate(model, conditions, opts)
    validate_regime(regime)
    target = model_device(model) if device is None else resolve_device(device)
    peers = _peers(model, layers, batch_dim)
    _check_recipe_options(conds, probe, regime, bool(peers))
    if device is None:
        check_on(batch, target, "batch")
        check_on(probe, target, "probe")
    if probe is not None and not peers:
        check_probe(*probe)
    if device is not None:
        model.to(target)
        batch = to_device(batch, target)
        probe = None if probe is None else (to_device(probe[0], target), to_device(probe[1], target))
    if peers:
        _check_peer_batch(batch, batch_dim)
        return stabilize_peer(model, batch, peers, conds, opts, probe, regime, batch_dim)
    _first_input(model, batch, layers[0])
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spike_fns = [layer.spike_fn for layer in layers]
    report = StabilityReport(mode, conds)
    timings = Timings()
    try:
        if conds == RECIPE or regime != "auto" or probe is not None:  # also the targets of D or G alone
            opts, report.regime = _recipe_regime(model, layers[0], opts, probe, regime)
        _stabilize_layers(model, batch, layers, conds, opts, report, timings)
    except BaseException:  # also Ctrl-C: the model is put back at once
        _restore(model, layers, spike_fns, snapshot)
        raise
    report.timings = timings.as_dict()
    return report
