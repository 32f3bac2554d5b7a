"""Non-finite training: where a NaN or inf came from, and what the run does about it.

A step whose loss or gradient is NaN/inf is never applied. With ``on_nonfinite="stop"`` (the default) the
run stops there: ``NonFiniteError`` names the step and the first layer whose values went non-finite. With
``"skip"`` the step is skipped and counted; after ``MAX_SKIPPED_IN_A_ROW`` skipped steps in a row the run
stops all the same. An update that makes a parameter non-finite cannot be taken back, so it stops the run in
both modes. A task loss that climbs past ``LOSS_GROWTH_FACTOR`` times the first step's warns once
(``LossWatch``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..models import SpikingModel

LOSS_GROWTH_FACTOR = 10.0  # warn once when a step's task loss exceeds this many times the first step's
MAX_SKIPPED_IN_A_ROW = 25  # on_nonfinite="skip": this many non-finite steps in a row stop the run
HINT = "a lower --lr or --clip-norm may help"

Named = list[tuple[str, nn.Parameter]]


class NonFiniteError(ValueError):
    """Training met a non-finite loss, gradient or parameter and stopped; ``record`` says where
    (step, epoch, batch, layer, tensor, cause). The ``spikestab`` command reports it as an error (exit 2)."""

    def __init__(self, message: str, record: dict | None = None) -> None:
        super().__init__(message)
        self.record = record or {}


def first_nonfinite(named: Sequence[tuple[str, Tensor]]) -> str | None:
    """The name of the first tensor (in the given order) with a NaN or inf value, or None."""
    if not named:
        return None
    ok = torch.stack([torch.isfinite(p.detach()).all() for _, p in named])
    if bool(ok.all()):
        return None
    return named[int((~ok).nonzero()[0])][0]


def layer_of(name: str) -> str:
    """The module path of a parameter name: ``stack.layers.1.weight_hh`` -> ``stack.layers.1``."""
    return name.rpartition(".")[0] or name


def bad_update(named: Named) -> dict | None:
    """The record of an applied update that made a parameter non-finite, or None."""
    bad = first_nonfinite(named)
    if bad is None:
        return None
    return {
        "cause": "update",
        "tensor": bad,
        "layer": layer_of(bad),
        "what": f"the update made parameter {bad} non-finite",
    }


def diagnose(
    model: SpikingModel, loss: float, named: Named, norms: Tensor, replay: Callable[[], tuple[Tensor, list[Tensor]]]
) -> dict:
    """Where a step with a non-finite loss or gradient went wrong: a non-finite parameter (first in
    forward order); else, for a non-finite loss, the first layer whose forward values (membrane voltage,
    then the logits) are non-finite, from ``replay()`` (the step's forward pass again: logits, voltages);
    else the non-finite gradient nearest the output (the first one backward reached)."""
    bad = first_nonfinite(named)
    if bad is not None:
        return {"cause": "parameter", "tensor": bad, "layer": layer_of(bad), "what": f"parameter {bad} is non-finite"}
    if not math.isfinite(loss):
        return _loss_record(model, loss, named, *replay())
    return _gradient_record(named, norms)


def _loss_record(model: SpikingModel, loss: float, named: Named, logits: Tensor, volts: list[Tensor]) -> dict:
    """A non-finite loss with finite parameters: the first layer whose voltage, else the logits, is not finite."""
    where, layer = "the loss", None
    layers = cast(nn.ModuleList, model.get_submodule("stack.layers"))
    for i, v in enumerate(volts):
        if not torch.isfinite(v).all():
            layer = f"stack.layers.{i}"
            where = f"the membrane voltage of {layer} ({type(layers[i]).__name__})"
            break
    else:
        if not torch.isfinite(logits).all():
            layer = model.output_layer  # the language model's output projection is its tied embedding
            where = f"the logits ({layer} output)"
    big_name, big = max(((n, p.detach().abs().max().item()) for n, p in named), key=lambda t: t[1])
    return {
        "cause": "loss",
        "tensor": None,
        "layer": layer,
        "what": f"the training loss is {loss} with every parameter finite; the first non-finite "
        f"values are {where} (largest |parameter| {big:.3g}, in {big_name})",
    }


def _gradient_record(named: Named, norms: Tensor) -> dict:
    """A finite loss with a non-finite gradient: the one backward reached first."""
    finite = torch.isfinite(norms).tolist()
    bad_grads = [n for (n, _), ok in zip(named, finite) if not ok]
    if not bad_grads:  # every tensor's norm is finite, their total overflows
        return {
            "cause": "gradient",
            "tensor": None,
            "layer": None,
            "what": "the total gradient norm overflows float32 although every gradient is finite",
        }
    first = bad_grads[-1]  # backward runs from the output, so the last in forward order came first
    more = f" ({len(bad_grads) - 1} more gradient tensors non-finite)" if len(bad_grads) > 1 else ""
    return {
        "cause": "gradient",
        "tensor": first,
        "layer": layer_of(first),
        "what": f"the gradient of {first} is non-finite with a finite loss (the first non-finite gradient "
        f"in backward order){more}",
    }


def skips(on_nonfinite: str, info: dict, in_a_row: int) -> bool:
    """Whether a non-finite step is skipped (and the run goes on) rather than stopping the run."""
    return on_nonfinite == "skip" and info["cause"] != "update" and in_a_row < MAX_SKIPPED_IN_A_ROW


def why_stopped(on_nonfinite: str, info: dict, in_a_row: int) -> tuple[str, str]:
    """(why the run stops, what may help) for a non-finite step that is not skipped."""
    if info["cause"] == "update":
        return (
            f"{info['what']}; an applied update cannot be taken back, so the run stops even with --on-nonfinite skip"
        ), HINT
    if on_nonfinite == "skip":
        return (
            f"{in_a_row} steps in a row were non-finite and skipped, the last because {info['what']}",
            f"the run is not recovering: {HINT}",
        )
    return info["what"], f"{HINT}, or --on-nonfinite skip to skip such steps"


class LossWatch:
    """Remembers the first step's task loss and warns once when a later one passes LOSS_GROWTH_FACTOR x it;
    ``growth`` records where (None until then)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.start: float | None = None
        self.growth: dict[str, Any] | None = None

    def __call__(self, task_loss: float, step: int, epoch: int) -> None:
        if self.start is None:
            self.start = task_loss
            return
        if self.growth is None and self.start > 0 and task_loss > LOSS_GROWTH_FACTOR * self.start:
            factor = task_loss / self.start
            self.growth = {
                "step": step,
                "epoch": epoch,
                "loss": task_loss,
                "start": self.start,
                "factor": factor,
                "threshold": LOSS_GROWTH_FACTOR,
            }
            self.log(
                f"warning: training loss {task_loss:.4g} at step {step} is {factor:.3g} times its start "
                f"({self.start:.4g} at step 1): the run may be diverging ({HINT})"
            )
