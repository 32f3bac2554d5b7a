"""Data-parallel training on torch.distributed: ``spikestab train --nproc N`` and ``torchrun``.

Every rank runs the same ``Trainer.fit`` on its share of each global batch; ``Trainer.parallel`` holds the
``Parallel`` object below (the interface the trainer asks for is ``step.Parallel``):

- rank 0 alone checks the run folder, reads a checkpoint, calibrates the rate and applies the stability
  conditions; ``Parallel.broadcast`` / ``Parallel.start`` give every rank its checkpoint and its weights,
  then wrap the model in ``DistributedDataParallel``: on the CPU over gloo, on CUDA (``--device cuda``
  or ``auto`` where torch sees a GPU) over nccl with one GPU per local rank (rank r on ``cuda:r``);
- ``BatchShard`` (the distributed sampler) gives rank r the r-th of ``world_size`` contiguous slices of
  every global batch of ``batch_size`` samples, so the global batches, their order and their input-dropout
  masks are those of a one-process run; the loss is weighted by the slice's share so that the averaged
  gradient is the gradient of the global batch's mean even when the last batch does not split evenly;
- step metrics are averaged over ranks with the same weights, counts are summed;
- only rank 0 evaluates, writes files or prints (the others wait for it in the next all-reduce).

``launch`` starts N local workers through torch's elastic launcher (``torch.distributed.launcher``); under
``torchrun`` the same ``spikestab train`` command line runs as one worker. A worker that dies stops the
others and is reported as a ``RankFailedError`` naming the rank, its exit and the last checkpoint.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..models import Run, SNNClassifier, SNNLanguageModel, load_model_state
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .device import check_ranks, describe, rank_device
from .report import report
from .trainer import StepHook, Trainer

# how long a rank waits in a collective, e.g. for rank 0's evaluation (the agent stops a run whose rank died)
COLLECTIVE_TIMEOUT = timedelta(hours=6)

# set by torchrun and by the elastic agent in every worker it starts
WORKER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class RankFailedError(RuntimeError):
    """A worker process failed or was killed; the message names it and says how to continue."""


def under_torchrun() -> bool:
    """True in a process started by torchrun or the elastic agent (its rendezvous variables are set)."""
    return all(name in os.environ for name in WORKER_ENV)


class _Simulate(nn.Module):
    """``model.simulate`` as a forward pass, which DistributedDataParallel needs to see to sync gradients."""

    def __init__(self, model: SNNClassifier | SNNLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.simulate(*args, **kwargs)


class BatchShard:
    """The distributed sampler: rank ``rank``'s contiguous slice of each global batch (dim 1 of inputs
    ``[T, B, ...]``, dim 0 of targets ``[B]``) and its loss weight ``world_size * n_local / n_global``.

    A rank whose slice is empty (a last batch smaller than ``world_size``) gets the batch's first sample
    with weight 0, so that it still takes part in the gradient all-reduce and adds nothing to it."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def __call__(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, float]:
        n = targets.shape[0]
        bounds = [n * r // self.world_size for r in range(self.world_size + 1)]
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        if hi == lo:
            return inputs[:, :1], targets[:1], 0.0
        return inputs[:, lo:hi], targets[lo:hi], self.world_size * (hi - lo) / n


class Parallel:
    """The hooks ``Trainer`` calls when ``trainer.parallel`` is set (one object per rank, after
    ``dist.init_process_group``)."""

    def __init__(self, model: SNNClassifier | SNNLanguageModel, device: torch.device | None = None) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = device or torch.device("cpu")
        self.shard = BatchShard(self.rank, self.world_size)
        self.model = model
        self.ddp: nn.parallel.DistributedDataParallel | None = None

    # ------------------------------------------------------------ start
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; checkpoints, evaluation results)."""
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def start(self, trainer: Trainer) -> None:
        """Give every rank rank 0's weights and buffers (stabilised or resumed), give ranks > 0 their own
        dropout stream, and wrap the model in DistributedDataParallel."""
        state = self.broadcast({k: v.cpu() for k, v in trainer.model.state_dict().items()} if self.rank == 0 else None)
        if self.rank != 0:
            load_model_state(trainer.model, state)  # also the buffer shapes the stability conditions changed
            torch.manual_seed(trainer.cfg.seed * 1_000_003 + trainer.global_step * 1009 + self.rank)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(_Simulate(self.model), device_ids=ids)

    # ------------------------------------------------------------ per step
    def simulate(self, inputs: Tensor, states: Any = None) -> Run:
        """``model.simulate``: through DDP (once started) when a gradient is recorded in training mode."""
        if self.ddp is not None and self.model.training and torch.is_grad_enabled():
            return self.ddp(inputs, states)
        return self.model.simulate(inputs, states)

    def _all_reduce(self, values: list[float], dtype: torch.dtype) -> list:
        t = torch.tensor(values, dtype=dtype, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def mean(self, values: list[float], weight: float) -> list[float]:
        """The global-batch means of per-rank means (each rank weighted by its share of the batch)."""
        return [v / self.world_size for v in self._all_reduce([weight * v for v in values], torch.float64)]

    def count(self, values: list[int], weight: float) -> list[int]:
        """Counts summed over ranks (a weight-0 rank, which holds a stand-in sample, adds nothing)."""
        return [int(v) for v in self._all_reduce([v if weight > 0 else 0 for v in values], torch.int64)]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (e.g. a time limit one rank reached first)."""
        return bool(self._all_reduce([int(flag)], torch.int64)[0])


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU ones."""
    return "nccl" if device.type == "cuda" else "gloo"


def _device(cfg: TrainConfig) -> torch.device:
    """Where this rank trains (``device.rank_device``): its own GPU ``cuda:LOCAL_RANK`` when the run's
    device is CUDA (made the rank's current device, as nccl needs), else the CPU. ValueError when this
    machine's ranks cannot have a GPU each."""
    check_ranks(cfg.device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    device = rank_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def check_distributed_config(cfg: TrainConfig, world_size: int) -> None:
    """ValueError for what data-parallel training does not support, before any process starts."""
    if world_size < 1:
        raise ValueError(f"nproc must be an integer >= 1, got {world_size}")
    if cfg.task == "ptb":
        raise ValueError(
            "task 'ptb' cannot be trained with --nproc / torchrun: a language model carries its "
            "recurrent state from batch to batch, and checkpoints keep one process's state; "
            "train it in one process"
        )


def train_worker(
    cfg: TrainConfig,
    resume: bool = False,
    task=None,
    on_step: StepHook | None = None,
    log: Callable[[str], None] = print,
    figures: bool = False,
) -> dict | None:
    """One rank of a data-parallel run (in a process started by ``launch`` or torchrun): join the process
    group, train, leave it. Returns the results on rank 0, None elsewhere."""
    device = _device(cfg)
    backend = backend_for(device)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        check_distributed_config(cfg, world)
        if cfg.threads is None:  # N processes on one machine: share its cores instead of N x all of them
            local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
            cfg.threads = max(1, (os.cpu_count() or 1) // local)
        if rank != 0:
            cfg.progress = False
        if rank == 0 and cfg.device == "auto":
            print(f"spikestab: device auto: rank 0 trains on {describe(device)}", file=sys.stderr, flush=True)
        trainer = Trainer(cfg, task, on_step=on_step, log=log if rank == 0 else (lambda _: None), device=device)
        assert isinstance(trainer.model, (SNNClassifier, SNNLanguageModel))
        trainer.parallel = Parallel(trainer.model, device)
        results = trainer.fit(resume=resume)
        if rank == 0:
            where = "one GPU each" if device.type == "cuda" else str(device)
            log(f"data-parallel run: {world} processes ({backend}, {where}), global batch {cfg.batch_size}")
            report(trainer, results, figures)
            return results
        return None
    finally:
        dist.destroy_process_group()


def _signal_name(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _checkpoint_note(out: str) -> str:
    path = os.path.join(out, "checkpoint.pt")
    if not os.path.exists(path):
        return f"no checkpoint had been written to {out}, so --resume starts the run again"
    try:
        step = load_checkpoint(path)["global_step"]
    except ValueError as err:
        return f"its checkpoint cannot be read ({err})"
    return f"the last checkpoint (step {step}) is in {path}; continue with --resume (any --nproc)"


def launch(cfg: TrainConfig, nproc: int, entry: Callable[..., Any] = train_worker, args: tuple = ()) -> dict[int, Any]:
    """Run ``entry(cfg, *args)`` in ``nproc`` local worker processes through torch's elastic launcher
    (a c10d rendezvous on a free localhost port, like ``torchrun --standalone``); returns each rank's
    return value. ``entry`` must be importable by name (the workers are spawned). The agent does not
    restart failed workers (``max_restarts=0``): a run is continued with ``--resume``.

    Raises ``RankFailedError`` when a worker fails or is killed (after the others are stopped)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"nproc must be an integer >= 1, got {nproc!r}")
    check_distributed_config(cfg, nproc)
    check_ranks(cfg.device, nproc)  # one GPU per process: said before any process starts
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    try:
        return elastic_launch(config, entry)(cfg, *args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        why = _signal_name(failure.exitcode)
        message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
        detail = (
            ""
            if failure.exitcode < 0
            else (
                f": {message}"
                if message and not message.startswith("To enable traceback")
                else " (see its output above)"
            )
        )
        failed = RankFailedError(
            f"rank {rank} of {nproc} (pid {failure.pid}) {why}{detail}; the other ranks were "
            f"stopped; {_checkpoint_note(cfg.out)}"
        )
    finally:
        # the agent and its rendezvous TCPStore are cyclic garbage once the launch (or its exception) is gone:
        # collect them here, where the store's thread lives; finalised in a process forked from this one,
        # the store's destructor would wait forever for that thread
        gc.collect()
    raise failed  # outside the handler: no __context__ keeps the agent's frames (and the store) alive


def main(cfg: TrainConfig, nproc: int | None, resume: bool, figures: bool) -> int:
    """``spikestab train`` with ``--nproc`` or under torchrun."""
    if under_torchrun():
        if nproc is not None:
            raise ValueError(
                "--nproc starts its own processes; under torchrun leave it out "
                "(torchrun's --nproc-per-node sets the number of processes)"
            )
        train_worker(cfg, resume, figures=figures)
        return 0
    assert nproc is not None
    try:
        launch(cfg, nproc, args=(resume, None, None, print, figures))
    except RankFailedError as err:
        print(f"spikestab train: error: {err}", file=sys.stderr, flush=True)
        return 1
    return 0
