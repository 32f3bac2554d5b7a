"""Data-parallel training (train/distributed.py): two gloo ranks on CPU keep identical weights after every
step and end where a one-process run with the same global batch ends; a rank killed mid-epoch is reported
and the run resumes (with another number of processes) to the same weights."""

import gc
import os
import signal

import pytest
import torch
import torch.distributed as dist

from spikestab.files import read_jsonl
from spikestab.train import Trainer
from spikestab.train.distributed import BatchShard, RankFailedError, launch, train_worker
from test_train import cfg_for, tiny_task

pytestmark = pytest.mark.timeout(120)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def tiny_worker(cfg, resume=False, kill_at=None):
    """One rank (spawned by the elastic agent): train the tiny task, return its weights after every step;
    rank 1 kills itself with SIGKILL after step ``kill_at``."""
    weights = []

    def on_step(trainer, step):
        weights.append(_flat(trainer.model))
        if kill_at is not None and dist.get_rank() == 1 and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train_worker(cfg, resume, task=tiny_task(), on_step=on_step, log=lambda s: None)
    return torch.stack(weights)


def _cfg(tmp_path, name):
    # no dropout: the masks are drawn per rank, so only the dropout-free run can equal one process exactly
    return cfg_for(tmp_path, name, epochs=2, dropout=0.0, checkpoint_every=2)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the plain Trainer in this process, same config and global batch."""
    tmp = tmp_path_factory.mktemp("one")
    trainer = Trainer(_cfg(tmp, "run"), tiny_task(), log=lambda s: None)
    trainer.fit()
    return trainer, _flat(trainer.model)


def test_batch_shard_splits_every_global_batch_and_weights_the_loss():
    x, y = torch.arange(5.0).view(1, 5, 1), torch.arange(5)
    parts = [BatchShard(r, 3)(x, y) for r in range(3)]
    assert torch.cat([p[1] for p in parts]).tolist() == [0, 1, 2, 3, 4]
    # averaging the weighted slice means (what DDP does with the gradients) gives the global batch's mean
    assert sum(w * xs.mean() for xs, _, w in parts) / 3 == pytest.approx(x.mean().item())
    alone = [BatchShard(r, 2)(x[:, :1], y[:1]) for r in range(2)]  # one sample, two ranks
    assert [a[1].tolist() for a in alone] == [[0], [0]] and [a[2] for a in alone] == [0.0, 2.0]


def _collectable_stores() -> list:
    """TCPStores a garbage collection would finalise now. The elastic agent's rendezvous store must be
    finalised inside ``launch``: collected later in a process forked from this one (test_faults forks),
    its destructor waited forever for a store thread that exists only here."""
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection would free goes to gc.garbage instead
    try:
        gc.collect()
        return [r for o in gc.garbage for r in gc.get_referents(o) if type(r).__name__ == "TCPStore"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_two_gloo_ranks_match_each_other_every_step_and_one_process(tmp_path, one_process):
    trainer, final = one_process
    cfg = _cfg(tmp_path, "dist")
    out = launch(cfg, 2, entry=tiny_worker)
    assert not _collectable_stores()
    steps = trainer.global_step
    assert out[0].shape[0] == out[1].shape[0] == steps == 12
    assert torch.equal(out[0], out[1])  # identical on both ranks after every step
    torch.testing.assert_close(out[0][-1], final, rtol=1e-5, atol=1e-6)
    # only rank 0 wrote: one metrics file, global-batch step records equal to the one-process run's
    mine, ref = read_jsonl(tmp_path / "dist" / "metrics.jsonl"), read_jsonl(trainer.out / "metrics.jsonl")
    assert [r["kind"] for r in mine] == [r["kind"] for r in ref]
    for a, b in zip(mine, ref):
        for key in ("loss", "train_accuracy", "val_accuracy", "test_accuracy"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4), key


def test_killed_rank_is_reported_and_the_run_resumes_with_another_nproc(tmp_path, one_process):
    _, final = one_process
    cfg = _cfg(tmp_path, "dist")
    with pytest.raises(RankFailedError) as err:
        launch(cfg, 2, entry=tiny_worker, args=(False, 5))  # rank 1 dies in epoch 1 (6 batches per epoch)
    msg = str(err.value)
    failure = err.value
    del err  # the test's own reference to the traceback: what remains is what launch left behind
    assert failure.__context__ is None and not _collectable_stores()
    assert "rank 1 of 2" in msg and "SIGKILL" in msg and "--resume" in msg, msg
    assert "step 4" in msg or "step 6" in msg or "step 5" in msg, msg
    resumed = Trainer(cfg, tiny_task(), log=lambda s: None)  # one process, no torch.distributed
    resumed.fit(resume=True)
    torch.testing.assert_close(_flat(resumed.model), final, rtol=1e-5, atol=1e-6)


def test_bad_nproc_and_a_language_task_are_refused_before_any_process_starts(tmp_path):
    with pytest.raises(ValueError, match="nproc must be an integer >= 1"):
        launch(_cfg(tmp_path, "x"), 0)
    with pytest.raises(ValueError, match="task 'ptb'"):
        launch(cfg_for(tmp_path, "lm", task="ptb", layers="16"), 2)
    assert not (tmp_path / "x").exists()
