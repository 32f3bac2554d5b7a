"""The recipe's regime choice: start dense (rate 1/2) or sparse (rate 0.03, 0.003 for a timing code),
decided before training by how much class information a dense start leaves readable
(docs/results/stability_choice.md, section 5).

A classifier's prediction is the argmax of its time-averaged logits, a linear function of the last
layer's spike counts, so what an initial network can offer the readout is the class information that a
linear classifier can read from spike counts. ``count_readability`` measures it (cross-validated accuracy
of a ridge-regression readout of standardised counts). ``choose_regime`` measures it on the first spiking
layer for a scan of thresholds and at the dense operating point (condition D at rate 1/2): where the
dense start keeps at least ``DENSE_READABILITY`` of the best readability any threshold gives, the recipe
starts dense (D at 1/2, G at ``drive.GROWTH_RATIO``), else sparse (D at ``sparse_target``:
``TIMING_SPARSE_RATE`` for a timing code, ``SPARSE_RATE`` otherwise; G at ``SPARSE_GROWTH_RATIO``). The
start is also sparse when the input's own spike counts carry no class information (a timing code, as in
Randman, where every channel fires once): a count-reading dense start has nothing to keep there, and a
sparse one detects coincidences. On sl-MNIST a dense start keeps 0.69-0.94 of the best; on synthetic SHD
and Randman it keeps 0.27-0.53 (2 x 64 and 2 x 256 LIF, seeds 0-2): their input is sparse in time, and a
layer brought to rate 1/2 turns it into tonic firing whose counts no longer tell the classes apart, which
is where a dense start does not train. The measurement is a proxy for what a start lets training find,
checked on tasks it was not decided on in that section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..neurons.layers import SpikingNeurons
from .drive import condition_d
from .measure import layer_input, record
from .options import StabilizeOptions

__all__ = [
    "RegimeChoice",
    "choose_regime",
    "regime_from_scan",
    "count_readability",
    "check_probe",
    "REGIMES",
    "DENSE_READABILITY",
    "SPARSE_RATE",
    "TIMING_SPARSE_RATE",
    "sparse_target",
    "SPARSE_GROWTH_RATIO",
    "DENSE_RATE",
    "SCAN_FACTORS",
    "MIN_PROBE_SAMPLES",
    "TIMING_CODE_SE",
    "recipe_options",
    "unmeasured_regime",
    "validate_regime",
]

REGIMES = ("auto", "dense", "sparse")  # "auto": measured by choose_regime
DENSE_RATE = 0.5  # the paper's initial rate (condition D's target in the dense regime)
SPARSE_RATE = 0.03  # condition D's target in the sparse regime (above the 1 % silent warning)
# ... and where the probe finds a timing code (the input's counts carry no class information): the
# pre-registered sparse-rate study's rule R, against 0.03 on four check configurations +5.2 points test
# accuracy (95 % CI +1.7 to +8.6, n = 20; docs/results/sparse_rate.md); on count codes (SHD) lower rates
# trained worse, so they keep SPARSE_RATE
TIMING_SPARSE_RATE = 0.003
# G's target in the sparse regime: at rates of a few percent the recurrence carries little of the gradient
# and a dampening that makes it carry 40 % of the decay (GROWTH_RATIO 0.6) over-amplifies the few paths it
# has (SHD, Randman 2x64, seeds 0-1: 0.9 trained 4-10 points better than 0.6 at rate 0.03)
SPARSE_GROWTH_RATIO = 0.9
# the dense start is kept when its readability is at least this share of the best over the threshold scan
# (decided on 2x64 LIF, seeds 0-2, with a logistic-regression probe: sl-MNIST 0.71-0.90, SHD 0.40-0.51, Randman
# 0.34-0.53; this ridge probe gives 0.69-0.94, 0.44-0.50 and 0.27-0.53, the same decisions)
DENSE_READABILITY = 0.62
SCAN_FACTORS = (3.0, 2.0, 1.5, 1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1)  # thresholds scanned, x the current one
# the input counts are "no information" within this many binomial standard errors of the largest class's share
# (added after the regime check: spikestab's default Randman, 20 units, kept 0.68-0.99 of the readability
# dense and trained worse dense, 14.2 % against 18.9 %)
TIMING_CODE_SE = 3.0
MIN_PROBE_SAMPLES = 64  # fewer labelled samples cannot estimate an accuracy to a few points
FOLDS = 4
RIDGE = 1e-2  # ridge penalty of the readability probe per sample (standardised counts)


def check_probe(inputs: Tensor, labels: Tensor) -> int:
    """Validate a labelled probe set (inputs [T, B, ...], labels [B] class indices); returns the number of
    classes. Raises ValueError naming the argument."""
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise ValueError(
            f"probe inputs must be a tensor [T, B, ...], got {type(inputs).__name__}"
            f"{'' if not isinstance(inputs, Tensor) else ' of shape ' + str(tuple(inputs.shape))}"
        )
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError("probe labels must be a 1-d integer tensor of class indices [B]")
    if labels.shape[0] != inputs.shape[1]:
        raise ValueError(
            f"probe labels must have one entry per sample: {labels.shape[0]} labels for {inputs.shape[1]} samples"
        )
    if labels.shape[0] < MIN_PROBE_SAMPLES:
        raise ValueError(f"the probe needs at least {MIN_PROBE_SAMPLES} labelled samples, got {labels.shape[0]}")
    if int(labels.min()) < 0:
        raise ValueError(f"probe labels must be class indices >= 0, got {int(labels.min())}")
    classes = int(labels.max()) + 1
    if int(torch.unique(labels).numel()) < 2:
        raise ValueError("probe labels must contain at least 2 classes")
    return classes


def count_readability(spikes: Tensor, labels: Tensor, classes: int, folds: int = FOLDS, ridge: float = RIDGE) -> float:
    """Cross-validated accuracy of a linear readout of the spike counts of spikes [T, B, H]: ridge regression
    of the one-hot labels on the standardised counts (closed form, penalty ``ridge`` per sample, argmax
    decides), over ``folds`` folds of a fixed random permutation of the samples (no order in the data can
    line up with them). Deterministic. What a linear readout of time-averaged activity can tell apart."""
    counts = spikes.detach().float().mean(0).double()  # counts <= T: exact in float32
    counts = (counts - counts.mean(0)) / (counts.std(0) + 1e-6)
    feats = torch.cat([counts, counts.new_ones(counts.shape[0], 1)], 1)  # the bias as a feature
    onehot = F.one_hot(labels, classes).double()
    # the same folds on every device: drawn from a seeded CPU generator
    gen = torch.Generator().manual_seed(0)
    fold = torch.randperm(counts.shape[0], generator=gen, device="cpu").to(counts.device) % folds
    penalty = torch.eye(feats.shape[1], dtype=feats.dtype, device=feats.device)
    penalty[-1, -1] = 0.0  # the bias is not penalised
    correct = 0
    for k in range(folds):
        test = fold == k
        a, y = feats[~test], onehot[~test]
        w = torch.linalg.solve(a.T @ a + ridge * a.shape[0] * penalty, a.T @ y)
        correct += int(((feats[test] @ w).argmax(-1) == labels[test]).sum())
    return correct / counts.shape[0]


@dataclass
class RegimeChoice:
    """What ``choose_regime`` measured and decided (shown in the stability report)."""

    regime: str  # "dense" or "sparse"
    dense_readability: float  # first layer, at condition D's threshold for rate 1/2
    dense_rate: float
    best_readability: float  # the best over SCAN_FACTORS
    best_factor: float  # its threshold, as a factor of the layer's threshold
    samples: int
    classes: int
    input_readability: float  # the probe's own input counts (the layer's input)
    baseline: float  # the readability of no information: the largest class's share of the probe set
    scan: list[tuple[float, float, float]] = field(default_factory=list)  # (factor, rate, readability)

    @property
    def ratio(self) -> float:
        """The dense start's readability as a share of the best (the quantity compared to DENSE_READABILITY)."""
        return self.dense_readability / self.best_readability if self.best_readability > 0 else 0.0

    @property
    def timing_code(self) -> bool:
        """Whether the input's spike counts carry no class information (readability within
        ``TIMING_CODE_SE`` standard errors of the baseline): the classes are in the spike times only."""
        se = (self.baseline * (1 - self.baseline) / self.samples) ** 0.5
        return self.input_readability < self.baseline + TIMING_CODE_SE * se

    @property
    def reason(self) -> str:
        """Why the regime is what it is, in words."""
        if self.timing_code:
            return "the input's spike counts carry no class information (a timing code)"
        kept = "keeps" if self.ratio >= DENSE_READABILITY else "keeps only"
        return f"a dense start {kept} {self.ratio:.2f} of the best count readability of layer 0"

    def to_dict(self) -> dict:
        return {
            "regime": self.regime,
            "dense_readability": self.dense_readability,
            "dense_rate": self.dense_rate,
            "best_readability": self.best_readability,
            "best_factor": self.best_factor,
            "ratio": self.ratio,
            "threshold_ratio": DENSE_READABILITY,
            "samples": self.samples,
            "classes": self.classes,
            "chance": 1.0 / self.classes,
            "input_readability": self.input_readability,
            "baseline": self.baseline,
            "timing_code": self.timing_code,
            "reason": self.reason,
            "scan": [list(s) for s in self.scan],
        }

    def __str__(self) -> str:
        return (
            f"regime {self.regime}: {self.reason} (layer 0 at rate {self.dense_rate:.2f}: "
            f"{self.dense_readability:.3f}, best {self.best_readability:.3f} at {self.best_factor:g} x its "
            f"threshold, dense needs >= {DENSE_READABILITY:g} of it; input counts {self.input_readability:.3f}, "
            f"no information {self.baseline:.3f}; {self.samples} samples)"
        )


@torch.no_grad()
def choose_regime(
    model: nn.Module,
    layer: SpikingNeurons,
    inputs: Tensor,
    labels: Tensor,
    dense_rate: float = DENSE_RATE,
    solve_batch: int = 8,
) -> RegimeChoice:
    """Measure the count readability of ``layer`` (the model's first spiking layer) on the labelled probe
    set (inputs [T, B, ...] as the model takes them, labels [B]) for each threshold of ``SCAN_FACTORS``
    and at condition D's threshold for the dense start's rate ``dense_rate`` (solved on the first
    ``solve_batch`` samples), and choose the regime (:func:`regime_from_scan`). The layer is left exactly
    as it was."""
    check_probe(inputs, labels)
    x = layer_input(model, inputs, 0)
    current = layer.sequence_current(x)[0].detach()
    start = layer.threshold.detach().clone()
    fn = layer.spike_fn

    def spikes_at(factor: float) -> Tensor:
        layer.threshold.copy_(start * factor)
        return record(layer, x, current=current).z

    def dense_spikes() -> Tensor:
        layer.threshold.copy_(start)
        condition_d(layer, x[:, :solve_batch], rate=dense_rate)
        return record(layer, x, current=current).z

    try:
        return regime_from_scan(spikes_at, dense_spikes, x, labels)
    finally:
        layer.threshold.copy_(start)
        layer.spike_fn = fn


def regime_from_scan(
    spikes_at: Callable[[float], Tensor], dense_spikes: Callable[[], Tensor], inputs: Tensor, labels: Tensor
) -> RegimeChoice:
    """The regime of any first spiking population: ``spikes_at(factor)`` returns its spikes [T, B, H] on
    the probe set with its threshold scaled by ``factor`` (each of ``SCAN_FACTORS``), ``dense_spikes()``
    its spikes at condition D's threshold for the dense rate, ``inputs`` [T, B, ...] the input it reads
    (whose counts decide whether the input is a timing code). The caller restores the population."""
    classes = check_probe(inputs, labels)
    scan = []
    for factor in SCAN_FACTORS:
        z = spikes_at(factor)
        scan.append((factor, float(z.mean()), count_readability(z, labels, classes)))
    z = dense_spikes()
    dense, dense_rate = count_readability(z, labels, classes), float(z.mean())
    best = max(scan, key=lambda s: s[2])
    baseline = float(torch.bincount(labels).max()) / labels.shape[0]
    flat = inputs.reshape(inputs.shape[0], inputs.shape[1], -1)
    choice = RegimeChoice(
        "dense",
        dense,
        dense_rate,
        best[2],
        best[0],
        int(labels.shape[0]),
        classes,
        count_readability(flat, labels, classes),
        baseline,
        scan,
    )
    if choice.timing_code or not choice.ratio >= DENSE_READABILITY:
        choice.regime = "sparse"
    return choice


def sparse_target(sparse_rate: float | None, timing_code: bool) -> float:
    """D's target in the sparse regime: ``sparse_rate`` where given, else ``TIMING_SPARSE_RATE`` for an input
    the probe found to be a timing code and ``SPARSE_RATE`` otherwise (also where nothing was measured)."""
    if sparse_rate is not None:
        return sparse_rate
    return TIMING_SPARSE_RATE if timing_code else SPARSE_RATE


def unmeasured_regime(regime: str) -> dict:
    """The report's regime entry where nothing was measured: ``regime`` forced, or dense ("auto") for want
    of a labelled probe."""
    why = "forced" if regime != "auto" else "not measured (no labelled probe set): the dense default"
    regime = "dense" if regime == "auto" else regime
    return {"regime": regime, "measured": False, "summary": f"regime {regime}: {why}"}


def recipe_options(opts: StabilizeOptions, entry: dict) -> StabilizeOptions:
    """``opts`` with D's rate and G's growth ratio of the report's regime ``entry``: unchanged for "dense";
    for "sparse" ``sparse_target(opts.sparse_rate, the entry's timing code)`` and ``SPARSE_GROWTH_RATIO``."""
    if entry["regime"] != "sparse":
        return opts
    rate = sparse_target(opts.sparse_rate, bool(entry.get("timing_code")))
    return dataclasses.replace(opts, rate=rate, growth_ratio=SPARSE_GROWTH_RATIO)


def validate_regime(regime: str) -> None:
    """Raise ValueError unless ``regime`` is one of ``REGIMES``."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {list(REGIMES)}, got {regime!r}")
