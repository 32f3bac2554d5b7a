"""Fault injection on tiny runs: SIGKILL at seeded random points of training and of make-shd (between
steps, in the middle of a checkpoint or part file, between the two renames that keep the previous
checkpoint, in the middle of an h5 file), each run resumed to the uninterrupted result; a full disk while a
checkpoint is written; truncated checkpoints and h5 files.

Kills are real: the run goes on in a forked child that SIGKILLs itself (no cleanup, no ``finally``).
make-shd runs with the tone stand-in of tests/test_make_shd.py (espeak-ng is not needed); everything after
the synthesiser (cochlear encoding, part files, merge, h5 writing, resume) is the real code.
"""

import errno
import gc
import io
import multiprocessing
import os
import random
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from spikestab import files
from spikestab.cli import main
from spikestab.data import load_task, make_shd, shd
from spikestab.files import previous_path, read_jsonl
from spikestab.train import Trainer
from spikestab.train.checkpoint import load_checkpoint
from test_make_shd import SETTINGS, SPEAKERS, tone_source
from test_resume import TINY, ctrl_c_at, same_run
from test_train import cfg_for, tiny_task


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _in_child(target) -> int:
    """Run ``target()`` in a forked child; its exit code (-9: killed by SIGKILL, 0: it finished)."""
    gc.collect()  # no garbage whose finaliser joins a thread of this process may be collected in the child
    proc = multiprocessing.get_context("fork").Process(target=target)
    proc.start()
    proc.join(120)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    return proc.exitcode


def _nth_call(n: int):
    """A counter that says True on its n-th call."""
    calls = [0]

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == n

    return hit


def _kill_in(mode: str, n: int) -> None:
    """In a child: arrange a SIGKILL at the n-th occasion of ``mode``."""
    hit = _nth_call(n)
    if mode == "write":  # the n-th torch.save (checkpoint or best.pt): half its bytes written, then the kill
        save = torch.save

        def partial(obj, fh):
            if hit():
                buf = io.BytesIO()
                save(obj, buf)
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                fh.flush()
                _die()
            save(obj, fh)

        torch.save = partial
    elif mode in ("rotate", "h5"):
        replace = os.replace

        def cut(src, dst):
            if mode == "h5" and str(dst).endswith(".h5") and hit():  # an h5 file half written
                os.truncate(src, os.path.getsize(src) // 2)
                _die()
            replace(src, dst)
            if mode == "rotate" and Path(dst).name == "checkpoint.prev.pt" and hit():
                _die()  # checkpoint.pt moved away, the new one not yet in place

        os.replace = cut
    elif mode == "part":  # the n-th make-shd part file: half written, then the kill
        savez = np.savez

        def cut_part(file, **arrays):
            savez(file, **arrays)
            if hit():
                os.truncate(file, os.path.getsize(file) // 2)
                _die()

        np.savez = cut_part


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name], list(folder.rglob("*tmp*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run of the command (as in tests/test_resume.py)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _strip(records):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]


def test_sigkill_during_training_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    quiet = lambda s: None  # noqa: E731
    ref = Trainer(cfg_for(tmp_path, "ref"), tiny_task(0.1), log=quiet)
    ref_results = ref.fit()  # 3 epochs of 6 steps, a checkpoint every 3 steps
    kills = survived = 0
    for seed in range(4):
        rng = random.Random(seed)
        cfg = cfg_for(tmp_path, f"seed{seed}")
        these = 0
        for attempt in range(2):
            mode = ("step", "write", "rotate")[(2 * seed + attempt) % 3]  # every kind of kill, at random points
            n = rng.randint(1, 17) if mode == "step" else rng.randint(1, 6)

            def child(mode=mode, n=n, resume=attempt > 0):
                hook = (lambda trainer, step: _die() if step == n else None) if mode == "step" else None
                if mode != "step":
                    _kill_in(mode, n)
                Trainer(cfg, tiny_task(0.1), on_step=hook, log=quiet).fit(resume=resume)

            code = _in_child(child)
            assert code in (0, -signal.SIGKILL), code
            these += code == -signal.SIGKILL
        logs: list[str] = []
        resumed = Trainer(cfg, tiny_task(0.1), log=logs.append)
        results = resumed.fit(resume=True)
        a, b = ref.model.state_dict(), resumed.model.state_dict()
        metrics = [_strip(read_jsonl(d / "metrics.jsonl")) for d in (Path(cfg.out), tmp_path / "ref")]
        same = (
            all(torch.equal(a[k], b[k]) for k in a)
            and results["test"] == ref_results["test"]
            and results["best_epoch"] == ref_results["best_epoch"]
            and metrics[0] == metrics[1]
        )
        assert same, (seed, logs)
        _no_temporaries(Path(cfg.out))
        kills += these
        survived += these if same else 0
    with capsys.disabled():
        print(f"\ntest_faults: {survived}/{kills} SIGKILLs during training survived with identical results")
    assert survived == kills >= 6


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch, reference):
    out = tmp_path / "run"
    save, hit = torch.save, _nth_call(4)  # saves: checkpoint (step 2), checkpoint (4), best.pt, checkpoint (5)

    def full(obj, fh):
        if hit():
            fh.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        save(obj, fh)

    monkeypatch.setattr(torch, "save", full)
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "disk full" in err and "the last checkpoint is" in err and "(step 4, 0 epochs done)" in err
    assert f"resume with: spikestab train --resume --out {out}" in err
    _no_temporaries(out)  # the failed write removed its temporary file
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 4  # the previous checkpoint survives
    monkeypatch.undo()
    assert main(["train", "--resume", "--out", str(out)]) == 0
    same_run(out, reference)


def test_disk_full_at_start_leaves_no_files_and_says_to_run_the_command_again(tmp_path, capsys, monkeypatch):
    """The first write of the run (its config.json) fails: nothing is left in the folder (no empty
    metrics.jsonl), and the advice is not a bare --resume, which would start a run with default options."""
    out = tmp_path / "run"

    def full(path, mode, write, keep_previous=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_atomic_write", full)
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "disk full" in err and "run the same command again" in err and "--resume" not in err
    assert not out.exists() or not any(out.iterdir())


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, monkeypatch, reference):
    out = tmp_path / "run"
    ctrl_c_at(monkeypatch, 7)
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 130
    monkeypatch.undo()
    latest, prev = out / "checkpoint.pt", previous_path(out / "checkpoint.pt")
    assert load_checkpoint(latest)["global_step"] == 6 and load_checkpoint(prev)["global_step"] == 5
    kept = prev.read_bytes()
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])  # a cut copy, a failing disk
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"falling back to the previous checkpoint {prev} (epoch 1, step 5)" in printed
    assert "cannot be read" in printed
    same_run(out, reference)
    # both unreadable: a clear error, nothing written
    for path in (latest, prev):
        path.write_bytes(kept[:100])
    assert main(["train", "--resume", "--out", str(out)]) == 2
    assert "no readable checkpoint to resume from" in capsys.readouterr().err


@pytest.fixture(scope="module")
def shd_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("shd_ref")
    make_shd.generate(out, SETTINGS, workers=1, chunk=6, source=tone_source, speakers=SPEAKERS, log=io.StringIO())
    return out


def _make_shd(out: Path) -> dict:
    return make_shd.generate(
        out, SETTINGS, workers=1, chunk=6, source=tone_source, speakers=SPEAKERS, log=io.StringIO()
    )


def _same_dataset(a: Path, b: Path) -> bool:
    for split in ("train", "test"):
        x, y = (shd.read_shd(d / "SHD" / f"shd_{split}.h5") for d in (a, b))
        if not (
            all(np.array_equal(s, t) for s, t in zip(x["times"], y["times"]))
            and all(np.array_equal(s, t) for s, t in zip(x["units"], y["units"]))
            and np.array_equal(x["labels"], y["labels"])
            and len(x["times"]) == len(y["times"])
        ):
            return False
    return True


def test_sigkill_during_make_shd_resumes_to_the_uninterrupted_dataset(tmp_path, capsys, shd_reference):
    kills = survived = 0
    for seed in range(3):
        rng = random.Random(100 + seed)
        out = tmp_path / f"seed{seed}"
        these = 0
        for attempt in range(2):
            mode = ("utterance", "part", "h5")[(2 * seed + attempt) % 3]
            n = {"utterance": rng.randint(1, 40), "part": rng.randint(1, 8), "h5": rng.randint(1, 2)}[mode]

            def child(mode=mode, n=n):
                source = tone_source
                if mode == "utterance":
                    hit = _nth_call(n)
                    source = lambda utt, aug: _die() if hit() else tone_source(utt, aug)  # noqa: E731
                else:
                    _kill_in(mode, n)
                make_shd.generate(
                    out, SETTINGS, workers=1, chunk=6, source=source, speakers=SPEAKERS, log=io.StringIO()
                )

            code = _in_child(child)
            assert code in (0, -signal.SIGKILL), code
            these += code == -signal.SIGKILL
        _make_shd(out)
        same = _same_dataset(out, shd_reference)
        assert same, seed
        assert not (out / ".parts").exists()
        _no_temporaries(out)
        kills += these
        survived += these if same else 0
    with capsys.disabled():
        print(f"\ntest_faults: {survived}/{kills} SIGKILLs during make-shd survived with identical datasets")
    assert survived == kills >= 5


def test_a_truncated_h5_from_a_killed_make_shd_is_rewritten(tmp_path, shd_reference):
    out = tmp_path / "cut"

    def child():
        _kill_in("h5", 2)  # shd_train.h5 in place, shd_test.h5 half written
        _make_shd(out)

    assert _in_child(child) == -signal.SIGKILL
    train = out / "SHD" / "shd_train.h5"
    assert train.is_file() and not (out / "SHD" / "shd_test.h5").exists()
    assert list((out / "SHD").glob(".shd_test.h5.*.tmp"))  # the half-written file, never renamed into place
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])  # and a cut copy of the finished one
    with pytest.raises(ValueError, match="shd_train.h5"):
        shd.read_shd(train)  # a truncated file is named, never read as data
    _make_shd(out)
    assert _same_dataset(out, shd_reference) and load_task("shd", out).output_size == 20
    _no_temporaries(out)


def test_a_run_killed_before_its_first_checkpoint_leaves_no_temporary_on_resume(tmp_path):
    """A kill in the middle of the first checkpoint write leaves only a temporary; resuming starts
    fresh and removes it (it once survived, because only a resume from a checkpoint cleaned up)."""
    cfg = cfg_for(tmp_path, "first")
    code = _in_child(lambda: (_kill_in("write", 1), Trainer(cfg, tiny_task(0.1), log=lambda s: None).fit()))
    assert code == -signal.SIGKILL
    out = Path(cfg.out)
    assert not (out / "checkpoint.pt").exists() and list(out.glob(".*.tmp*"))
    Trainer(cfg, tiny_task(0.1), log=lambda s: None).fit(resume=True)
    _no_temporaries(out)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """A finished one-trial sweep (its sweep.db, sweep.json and run folder), copied by each test."""
    from spikestab.sweep import run_sweep
    from sweep_tiny import FIXED

    out = tmp_path_factory.mktemp("sweep") / "s"
    run_sweep(out, {**FIXED, "epochs": 1}, {"seed": [0]}, log=lambda line: None)
    return out


def _damage(db: Path, how: str) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as f:
        if how == "emptied":
            f.truncate(0)
        elif how.startswith("truncated"):  # what a full disk or a cut copy leaves
            f.truncate(int(size * float(how.split(":")[1])) if how != "truncated:header" else 50)
        else:  # bytes overwritten in the middle
            f.seek(size // 2)
            f.write(bytes(range(256)) * 8)


@pytest.mark.parametrize("how", ["emptied", "truncated:header", "truncated:0.3", "truncated:0.9", "overwritten"])
def test_a_damaged_sweep_database_is_a_clear_error_naming_it(tmp_path, finished_sweep, capsys, how):
    """sweep-report and a rerun of the sweep (its resume) stop with a message naming the file, before any
    trial runs and without writing to it (an emptied file once got fresh tables and the sweep ran again)."""
    import shutil

    from spikestab.sweep import report, run_sweep
    from sweep_tiny import FIXED

    out = tmp_path / "s"
    shutil.copytree(finished_sweep, out)
    db = out / "sweep.db"
    _damage(db, how)
    before = db.read_bytes()
    expected = "is empty (0 bytes)" if how == "emptied" else "is damaged"
    with pytest.raises(ValueError, match=f"the sweep database {db} {re.escape(expected)}"):
        report(out)
    with pytest.raises(ValueError, match=f"the sweep database {db} {re.escape(expected)}"):
        run_sweep(out, {**FIXED, "epochs": 1}, {"seed": [0]}, log=lambda line: None)
    assert main(["sweep-report", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"the sweep database {db}" in err and "Traceback" not in err, err
    assert db.read_bytes() == before


def test_a_sweep_database_whose_writer_was_killed_mid_transaction_opens(tmp_path, finished_sweep):
    """A worker SIGKILLed inside a write leaves a hot journal: the damage check rolls it back (a read-only
    check once called the intact database damaged) and the sweep reads as before."""
    import shutil
    import sqlite3

    from spikestab.sweep import report

    out = tmp_path / "s"
    shutil.copytree(finished_sweep, out)

    def writer():
        con = sqlite3.connect(out / "sweep.db", isolation_level=None)
        con.execute("PRAGMA cache_size = 1")  # spill pages to the file, so the journal is needed
        con.execute("BEGIN IMMEDIATE")
        con.execute("CREATE TABLE junk (x)")
        con.executemany("INSERT INTO junk VALUES (?)", [(os.urandom(500),) for _ in range(2000)])
        _die()

    assert _in_child(writer) == -signal.SIGKILL
    assert (out / "sweep.db-journal").stat().st_size > 0
    data = report(out, write=False)
    assert data["counts"]["complete"] == 1
    with sqlite3.connect(out / "sweep.db") as con:
        assert "junk" not in {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
