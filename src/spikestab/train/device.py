"""Where and how a run computes (``TrainConfig.device``, ``TrainConfig.precision``): the options' accepted
values, the device an option resolves to (``auto`` says on stderr which one it took), the device of each
rank of a data-parallel run and of each sweep worker, the kernel the run's layers take there, the
forward passes' autocast for ``bf16``, and the random state a checkpoint keeps for the device.

The model is built on the CPU from the seed and then moved, so its first weights are the same on every
device; checkpoints hold CPU tensors (``host``) and are read with ``map_location="cpu"``, so a run
continues on any device.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import torch

from ..kernels.devices import path_for, resolve_device
from ..stability.stabilize import to_device
from .fields import Check, Range

__all__ = [
    "DEVICE",
    "DEVICE_HELP",
    "PRECISIONS",
    "PRECISION_HELP",
    "autocast",
    "check_ranks",
    "describe",
    "host",
    "kernel_path",
    "parse_device",
    "random_state",
    "rank_device",
    "restore_rng",
    "rng_state",
    "run_device",
    "set_random_state",
    "worker_device",
]

CPU = torch.device("cpu")
PRECISIONS = ("32", "bf16")  # float32; bfloat16 autocast of the projections (time loops in float32)
PRECISION_HELP = (
    "training arithmetic: 32 (float32) | bf16 (torch.autocast with bfloat16: the input and readout "
    "projections in bfloat16; the spiking time loops, the surrogate gradient and the optimiser in float32; "
    "on the torch loop: a GPU, or --backend fused on the CPU)"
)
DEVICE_HELP = "where the run trains: auto (CUDA when torch sees it, else the CPU) | cpu | cuda | cuda:N"
DEVICE = Range(
    (
        Check(
            lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v) is not None),
            "one of 'auto', 'cpu', 'cuda', 'cuda:N'",
        ),
    )
)


def describe(device: torch.device) -> str:
    """A device in words: ``cuda:0 (NVIDIA H100 80GB HBM3)``, ``cpu (torch sees no CUDA device)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu (torch sees no CUDA device)" if not torch.cuda.is_available() else str(device)


def run_device(option: str, say: bool = True) -> torch.device:
    """The device of a run's ``--device`` option (``kernels.devices.resolve_device``: a ValueError naming
    what is accepted for a CUDA device torch does not see, before any work); ``auto`` says on stderr which
    device it took (unless not ``say``). "cuda" without an index is the current CUDA device, named with its
    index."""
    device = resolve_device(option)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if option == "auto" and say:
        print(f"spikestab: device auto: training on {describe(device)}", file=sys.stderr, flush=True)
    return device


def parse_device(option: str, say: bool = True) -> torch.device:
    """``run_device`` of a command's ``--device`` (``spikestab stabilize``, ``demo``), its value first
    checked against ``DEVICE`` (a ValueError naming the accepted values)."""
    problem = DEVICE.problem("device", option)
    if problem:
        raise ValueError(problem)
    return run_device(option, say)


def check_ranks(option: str, nproc: int) -> None:
    """ValueError, before any process starts, when ``nproc`` data-parallel ranks cannot each have a GPU of
    their own (nccl refuses two ranks on one GPU) or a single ``cuda:N`` is named for several ranks."""
    device = resolve_device(option)
    if device.type != "cuda" or nproc <= 1:
        return
    if device.index is not None:
        raise ValueError(
            f"device {option!r} names one GPU, but --nproc {nproc} needs one GPU per process: pass --device cuda "
            "(process r takes cuda:r)"
        )
    count = torch.cuda.device_count()
    if nproc > count:
        raise ValueError(f"--nproc {nproc} needs one GPU per process and torch sees {count}: use --nproc <= {count}")


def rank_device(option: str, local_rank: int) -> torch.device:
    """The device of local rank ``local_rank`` of a data-parallel run: its own GPU ``cuda:local_rank`` when
    the option resolves to CUDA (a ``cuda:N`` given for a one-process run is kept), else the CPU."""
    device = resolve_device(option)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def worker_device(option: str, index: int) -> str:
    """The device of sweep worker ``index`` for the sweep's option: with ``cuda`` (or ``auto`` where torch
    sees CUDA) the workers take the GPUs in turn (``cuda:index mod count``); ``auto`` elsewhere is the CPU
    (the sweep said so once, ``run_device``); ``cpu`` and ``cuda:N`` as given."""
    device = resolve_device(option)
    if device.type == "cuda" and device.index is None:
        return f"cuda:{index % torch.cuda.device_count()}"
    return str(device)


def kernel_path(net: str, device: torch.device, backend: str, precision: str = "32") -> str | None:
    """The kernel the run's spiking layers take on ``device`` in float32 (``kernels.devices.path_for``);
    None for net "slstm", whose layers run their own torch loop on any device. ValueError for precision
    "bf16" on the C loops, which compute in float32 only."""
    path = None if net == "slstm" else path_for(device, torch.float32, backend)
    if precision == "bf16" and path == "native":
        raise ValueError(
            f"precision 'bf16' runs on the torch time loop, but backend {backend!r} on {device} takes the C loops, "
            "which compute in float32 only: pass --backend fused, train on a GPU (--device cuda), or leave "
            "--precision out"
        )
    return path


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The forward passes' mixed precision: ``torch.autocast`` with bfloat16 on ``device`` for "bf16" (the
    spiking layers run their time loops outside it, in float32: ``kernels.fused.run_fused``), off for "32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def host(obj: Any) -> Any:
    """``obj`` (a checkpoint: dicts, lists, NamedTuples of tensors) with every tensor on the CPU, so that the
    file loads on a machine without the device it was written on."""
    return to_device(obj, CPU)


def rng_state(device: torch.device) -> dict:
    """The random state of ``device`` a checkpoint keeps besides the CPU's (``"cuda_rng"`` on a GPU, whose
    generator draws the model's dropout masks there); empty on the CPU."""
    return {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}


def restore_rng(ck: dict, device: torch.device) -> None:
    """Set ``device``'s generator from a checkpoint written on a GPU (a checkpoint from the CPU, or a run
    moved to the CPU, keeps the seeded state: the dropout masks then differ from the uninterrupted run's)."""
    if device.type == "cuda" and "cuda_rng" in ck:
        torch.cuda.set_rng_state(ck["cuda_rng"], device)


def random_state(device: torch.device) -> dict:
    """The state of every generator a step on ``device`` draws from (the CPU's, and the GPU's where the
    model's dropout masks are drawn there), to replay a step (``step.replay``)."""
    return {"rng": torch.get_rng_state(), **rng_state(device)}


def set_random_state(state: dict, device: torch.device) -> None:
    """Set the generators ``random_state`` saved."""
    torch.set_rng_state(state["rng"])
    restore_rng(state, device)
