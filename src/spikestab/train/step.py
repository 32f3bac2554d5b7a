"""One optimisation step: the per-step cross-entropy (plus the sparsity loss), the gradient norms per
tensor and per layer, the update (clipping, the paper's weight decay, AdamW) or, for a non-finite loss or
gradient, its diagnosis instead; and the epoch's running totals of applied steps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Run, SNNClassifier, SpikingModel
from ..neurons import NeuronState
from ..regularizers import SparsityLoss
from . import nonfinite as nf
from .config import TrainConfig
from .device import autocast, random_state, set_random_state
from .task import SCORES, train_score

Named = list[tuple[str, nn.Parameter]]
States = list[NeuronState] | None


class Parallel(Protocol):
    """What a data-parallel run provides (``distributed.Parallel``): this rank's share of a batch, the
    forward pass through DistributedDataParallel, means and counts over the ranks, rank 0's objects."""

    rank: int

    def shard(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, float]: ...
    def simulate(self, inputs: Tensor, states: States) -> Run: ...
    def mean(self, values: list[float], weight: float) -> list[float]: ...
    def count(self, values: list[int], weight: float) -> list[int]: ...
    def any(self, flag: bool) -> bool: ...
    def broadcast(self, obj: Any) -> Any: ...
    def start(self, trainer: Any) -> None: ...


def train_step(
    model: SpikingModel,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    sparsity: SparsityLoss | None,
    parallel: Parallel | None,
    batch: tuple[Tensor, Tensor],
    states: States,
    epoch: float,
) -> tuple[dict, States, Callable[[], list[int]] | None]:
    """One optimisation step from ``states``: (its metrics record, the detached states to carry on, a
    classifier's ``() -> [correct, examples]``). A step with a non-finite loss or gradient is not applied
    (its gradients are cleared); an update that made a parameter non-finite has been applied already.
    Either way the record's ``nonfinite`` says what happened (None for a good step)."""
    inputs, targets = batch
    weight = 1.0  # this rank's share of the global batch's loss
    if parallel is not None:
        inputs, targets, weight = parallel.shard(inputs, targets)
    rng = random_state(inputs.device)  # to replay this forward pass if it has to be diagnosed
    with autocast(cfg.precision, inputs.device):  # --precision bf16: the projections in bfloat16
        out = (model.simulate if parallel is None else parallel.simulate)(inputs, states)
        loss, task, sp_val, sp_weight = losses(out, targets, sparsity, epoch)
    optimizer.zero_grad(set_to_none=True)
    (loss * weight).backward()
    values = [float(loss.detach()), float(task.detach()), sp_val, *[z.detach().mean().item() for z in out.spikes]]
    if parallel is not None:  # the global batch's means: every rank decides alike
        values = parallel.mean(values, weight)
    named, norms, layer_norms = gradient_norms(model)
    if math.isfinite(values[0]) and finite_gradients(norms):
        grad_norm = apply_update(model, optimizer, named, cfg)
        nonfinite = nf.bad_update(named)
    else:
        grad_norm = float(torch.linalg.vector_norm(norms))
        nonfinite = nf.diagnose(
            model, values[0], named, norms, lambda: replay(model, inputs, states, rng, cfg.precision)
        )
        optimizer.zero_grad(set_to_none=True)  # the step is not applied
    rec = {
        "loss": values[0],
        "task_loss": values[1],
        "sparsity_loss": values[2],
        "sparsity_weight": sp_weight,
        "grad_norm": grad_norm,
        "layer_grad_norms": layer_norms,
        "rates": values[3:],
        "nonfinite": nonfinite,
    }

    def counts() -> list[int]:
        c = [int((SNNClassifier.predict(out.logits.detach()) == targets).sum()), int(targets.numel())]
        return c if parallel is None else parallel.count(c, weight)

    return rec, detach_states(out.states), (counts if isinstance(model, SNNClassifier) else None)


def detach_states(states: States) -> States:
    """The states cut from the graph of the step that computed them (truncated BPTT between batches)."""
    if states is None:
        return None
    return [cast(Any, type(st))(*(t.detach() if t is not None else None for t in st)) for st in states]


def replay(
    model: SpikingModel, inputs: Tensor, states: States, rng: dict, precision: str = "32"
) -> tuple[Tensor, list[Tensor]]:
    """The logits and voltages of a step's forward pass again, with its dropout masks (its RNG state) and
    its ``precision``."""
    after = random_state(inputs.device)
    set_random_state(rng, inputs.device)
    try:
        with torch.no_grad(), autocast(precision, inputs.device):
            out = model.simulate(inputs, states, record_voltage=True)
    finally:
        set_random_state(after, inputs.device)
    return out.logits, out.voltages or []


def task_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy at every time step, averaged over time and batch (classification targets [B] are
    repeated over time)."""
    T, B, C = logits.shape
    if targets.dim() == 1:
        targets = targets.repeat(T)
    return F.cross_entropy(logits.reshape(T * B, C), targets.reshape(-1))


def losses(out: Run, targets: Tensor, sparsity: SparsityLoss | None, epoch: float) -> tuple[Tensor, Tensor, float, Any]:
    """(loss, task loss, sparsity loss value, sparsity weight) of a forward pass."""
    task = task_loss(out.logits, targets)
    if sparsity is None:
        return task, task, 0.0, 0.0
    sp, weight = sparsity(out.spikes, epoch)
    return task + sp, task, float(sp.detach()), weight


def gradient_norms(model: nn.Module) -> tuple[Named, Tensor, list[float]]:
    """The parameters with a gradient (forward order), each one's gradient norm before clipping, and the
    norm of every spiking layer's gradients."""
    named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    params = [p for _, p in named]
    norms = torch.stack([p.grad.norm() for p in params if p.grad is not None])
    index = {id(p): i for i, p in enumerate(params)}
    layer_norms = [
        torch.linalg.vector_norm(norms[[index[id(p)] for p in layer.parameters() if id(p) in index]]).item()
        for layer in cast(nn.ModuleList, model.get_submodule("stack.layers"))
    ]
    return named, norms, layer_norms


def finite_gradients(norms: Tensor) -> bool:
    """Every gradient finite, and their total norm too (it may overflow float32 on its own)."""
    return bool(torch.isfinite(norms).all() and torch.isfinite(torch.linalg.vector_norm(norms)))


def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed): weight decay on everything but embeddings (docs/theory.md, "Training")."""
    emb = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) not in emb], [p for p in params if id(p) in emb]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters (no decay on embeddings)."""
    decay, no_decay = decay_groups(model)
    # paper_weight_decay: decay applied by hand, not multiplied by lr, so AdamW's own decay is off
    wd = 0.0 if cfg.paper_weight_decay else cfg.weight_decay
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": wd}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def apply_update(model: nn.Module, optimizer: torch.optim.Optimizer, named: Named, cfg: TrainConfig) -> float:
    """Clip the gradients to ``cfg.clip_norm``, apply the paper's weight decay if asked, step the
    optimiser; returns the gradient norm before clipping."""
    grad_norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.clip_norm))
    if cfg.paper_weight_decay and cfg.weight_decay > 0:
        with torch.no_grad():
            for p in decay_groups(model)[0]:
                p.mul_(1.0 - cfg.weight_decay)
    optimizer.step()
    return grad_norm


def new_totals(n_layers: int) -> dict:
    """An epoch's running totals of its applied steps (and the count of skipped ones)."""
    return {
        "loss": 0.0,
        "task_loss": 0.0,
        "sparsity_loss": 0.0,
        "correct": 0,
        "examples": 0,
        "steps": 0,
        "rates": [0.0] * n_layers,
        "grad_norm": 0.0,
        "skipped": 0,
    }


def add_step(totals: dict, rec: dict, counts: Callable[[], list[int]] | None) -> None:
    """Add an applied step's record to ``totals``; ``counts()`` gives its (correct, examples) for a
    classifier (None for a language model)."""
    totals["loss"] += rec["loss"]
    totals["task_loss"] += rec["task_loss"]
    totals["sparsity_loss"] += rec["sparsity_loss"]
    totals["grad_norm"] += rec["grad_norm"]
    totals["steps"] += 1
    totals["rates"] = [r0 + r for r0, r in zip(totals["rates"], rec["rates"])]
    if counts is not None:
        correct, examples = counts()
        totals["correct"] += correct
        totals["examples"] += examples


def epoch_record(
    totals: dict, kind: str, val: dict, *, epoch: int, step: int, sparsity_weight: float, train_seconds: float
) -> dict:
    """An epoch's metrics record: means over its applied steps (None when none was applied) and ``val``."""
    steps, score = totals["steps"], SCORES[kind]

    def mean(total: float) -> float | None:
        return total / steps if steps else None

    return {
        "kind": "epoch",
        "epoch": epoch,
        "step": step,
        "train_loss": mean(totals["loss"]),
        "train_task_loss": mean(totals["task_loss"]),
        "train_sparsity_loss": mean(totals["sparsity_loss"]),
        "train_rates": [mean(r) for r in totals["rates"]],
        "grad_norm": mean(totals["grad_norm"]),
        "sparsity_weight": sparsity_weight,
        "val_loss": val["loss"],
        "val_rates": val["rates"],
        "train_seconds": train_seconds,
        "skipped_steps": totals.get("skipped", 0),
        f"train_{score}": train_score(kind, totals),
        f"val_{score}": val[score],
    }
