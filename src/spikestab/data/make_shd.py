"""``spikestab make-shd`` (offline SHD-format spoken digits) and ``spikestab encode-audio`` (your own audio).

make-shd synthesises the 20 SHD classes with espeak-ng (``spikestab.data.synth``), encodes each
utterance with the cochlear model (``spikestab.data.cochlea``) and writes ``OUT/SHD/shd_train.h5`` and
``OUT/SHD/shd_test.h5`` in the SHD layout, next to empty ``.zip`` markers, so that both
``spikestab train --task shd --data-dir OUT`` and ``tonic.datasets.SHD(save_to=OUT)`` read them offline.
Work is done in chunks written atomically to ``OUT/.parts``; an interrupted run started again with the
same settings skips the finished chunks, and the parts are merged (and removed) at the end. Each sample
depends only on the seed and its index, so the result does not depend on workers or interruptions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import shd, synth

Source = Callable[[synth.Utterance, synth.Augment], tuple[np.ndarray, int]]
SPLITS = ("train", "test")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Settings:
    """Everything that determines the generated files (stored, and compared when resuming)."""

    per_class: int
    test_per_class: int
    seed: int
    test_speakers: float
    augment: synth.Augment

    def to_dict(self) -> dict:
        return dict(asdict(self), format_version=FORMAT_VERSION, n_channels=shd.N_CHANNELS)


# state shared with forked workers (set by generate before the pool starts)
_WORK: dict = {}


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _part_path(parts: Path, split: str, start: int, stop: int) -> Path:
    return parts / f"{split}_{start:06d}_{stop:06d}.npz"


def _run_chunk(job: tuple[str, int, int]) -> tuple[int, float]:
    """Synthesise and encode utterances [start, stop) of a split into one part file; (count, audio s)."""
    from . import cochlea

    split, start, stop = job
    utterances = _WORK["plans"][split][start:stop]
    times, units, counts, seconds = [], [], [], 0.0
    for utt in utterances:
        audio, rate = _WORK["source"](utt, _WORK["augment"])
        spikes = cochlea.encode(audio, rate, seed=utt.seed)
        times.append(spikes.times.astype(np.float32))
        units.append(spikes.units.astype(np.uint16))
        counts.append(len(spikes.times))
        seconds += len(audio) / rate
    path = _part_path(_WORK["parts"], split, start, stop)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp,
        times=np.concatenate(times),
        units=np.concatenate(units),
        offsets=np.concatenate([[0], np.cumsum(counts)]),
        labels=np.array([u.label for u in utterances]),
        speakers=np.array([u.speaker.id for u in utterances]),
    )
    os.replace(tmp, path)
    return len(utterances), seconds


def _merge(parts: Path, split: str, jobs: list[tuple[str, int, int]], out: Path, meta: dict) -> int:
    times, units, labels, speakers = [], [], [], []
    for _, start, stop in jobs:
        with np.load(_part_path(parts, split, start, stop)) as part:
            off = part["offsets"]
            times += np.split(part["times"], off[1:-1])
            units += np.split(part["units"], off[1:-1])
            labels.append(part["labels"])
            speakers.append(part["speakers"])
    shd.write_shd(
        out / f"shd_{split}.h5", times, units, np.concatenate(labels), np.concatenate(speakers), synth.KEYS, meta
    )
    (out / f"shd_{split}.h5.zip").touch()  # tonic's offline existence check (data.md section 3)
    return len(times)


def _progress(done: int, total: int, fresh: int, started: float, stream) -> None:
    rate = fresh / max(time.time() - started, 1e-9)  # of this run (resumed work excluded)
    eta = (total - done) / rate if rate > 0 else float("inf")
    end = "\r" if stream.isatty() and done < total else "\n"
    print(f"make-shd: {done}/{total} utterances, {rate:.1f}/s, eta {eta:.0f} s", end=end, file=stream, flush=True)


def generate(
    out: str | os.PathLike,
    settings: Settings,
    *,
    workers: int = 2,
    chunk: int = 40,
    source: Source = synth.synthesize,
    speakers: tuple[list[synth.Speaker], list[synth.Speaker]] | None = None,
    log=sys.stderr,
) -> dict:
    """Generate (or finish) the dataset in `out`; returns the summary also written to out/make_shd.json.

    `source` turns an utterance into audio (espeak-ng by default); `speakers` overrides the (train,
    test) speaker lists, which otherwise come from espeak-ng's voice variants."""
    from . import cochlea  # numba: imported only by the commands that encode

    out = Path(out)
    if workers < 1 or chunk < 1:
        raise ValueError(f"workers and chunk: expected >= 1, got {workers} and {chunk}")
    config = json.loads(json.dumps(settings.to_dict()))  # as stored (tuples become lists)
    summary_path = out / "make_shd.json"
    if summary_path.is_file():
        return _finished(summary_path, config, log)
    train_spk, test_spk = speakers or synth.make_speakers(settings.seed, settings.test_speakers)
    all_speakers = _all_speakers(train_spk, test_spk)
    plans = {
        "train": synth.plan(train_spk, settings.per_class, settings.seed, split=0),
        "test": synth.plan(test_spk, settings.test_per_class, settings.seed, split=1),
    }
    parts = _parts_folder(out, config)
    jobs = {s: [(s, a, min(a + chunk, len(plans[s]))) for a in range(0, len(plans[s]), chunk)] for s in SPLITS}
    todo = [j for s in SPLITS for j in jobs[s] if not _part_path(parts, *j).is_file()]
    total = sum(len(p) for p in plans.values())
    done = total - sum(stop - start for _, start, stop in todo)
    if done:
        print(f"make-shd: resuming, {done}/{total} utterances already done", file=log)

    _WORK.update(plans=plans, source=source, augment=settings.augment, parts=parts)
    cochlea.encode(np.sin(np.arange(2205.0)), 22050)  # build the filter table and load the compiled code once
    run = _run_chunks(todo, workers, done, total, log)
    run["workers"] = workers
    folder, meta = out / "SHD", _speaker_meta(all_speakers)
    counts = {s: _merge(parts, s, jobs[s], folder, meta) for s in SPLITS}
    summary = dict(
        settings=config,
        samples=counts,
        keys=list(synth.KEYS),
        speakers={s: [asdict(p) for p in spk] for s, spk in zip(SPLITS, (train_spk, test_spk))},
        files=[str(folder / f"shd_{s}.h5") for s in SPLITS],
        last_run=run,
    )
    _atomic_json(summary_path, summary)
    shutil.rmtree(parts)
    print(f"make-shd: wrote {counts['train']} train and {counts['test']} test samples to {folder}", file=log)
    return summary


def _finished(summary_path: Path, config: dict, log) -> dict:
    """The summary of a dataset already complete in ``summary_path``'s folder, if made with ``config``."""
    summary = json.loads(summary_path.read_text())
    if summary["settings"] != config:
        raise ValueError(
            f"--out {summary_path.parent} already holds a dataset made with other settings "
            f"({summary_path}); choose another directory"
        )
    print(f"make-shd: {summary_path.parent} is complete already", file=log)
    return summary


def _all_speakers(train_spk: list[synth.Speaker], test_spk: list[synth.Speaker]) -> list[synth.Speaker]:
    """Both splits' speakers by id; ValueError unless the ids are 0..n-1."""
    all_speakers = sorted(train_spk + test_spk, key=lambda s: s.id)
    if [s.id for s in all_speakers] != list(range(len(all_speakers))):
        raise ValueError("speakers: ids must be 0..n-1 across train and test")
    return all_speakers


def _speaker_meta(speakers: list[synth.Speaker]) -> dict:
    """The SHD files' per-speaker extra fields (ages and heights unknown)."""
    return dict(
        gender=[s.gender for s in speakers],
        age=np.zeros(len(speakers)),
        body_height=np.full(len(speakers), np.nan),
    )


def _parts_folder(out: Path, config: dict) -> Path:
    """``out/.parts`` for this run: created, cleared of half-written files, holding ``config``; ValueError if
    it holds an unfinished run with other settings."""
    parts = out / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    for stale in [*parts.glob("*.tmp.npz"), *(out / "SHD").glob(".shd_*.h5.*.tmp")]:
        stale.unlink()  # half-written by a killed run (never renamed into place, so never read)
    config_path = parts / "settings.json"
    if config_path.is_file() and json.loads(config_path.read_text()) != config:
        raise ValueError(
            f"{parts} holds an unfinished run with other settings; use the same settings to "
            f"resume it, another --out, or delete {parts}"
        )
    _atomic_json(config_path, config)
    return parts


def _run_chunks(todo: list[tuple[str, int, int]], workers: int, done: int, total: int, log) -> dict:
    """Run the chunks still to do (in ``workers`` forked processes), printing progress; returns what this
    run did (utterances, seconds, audio seconds, rate)."""
    started, audio_seconds, fresh = time.time(), 0.0, 0
    results: Iterator[tuple[int, float]]
    if workers == 1 or len(todo) <= 1:
        results = map(_run_chunk, todo)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap_unordered(_run_chunk, todo)
    try:
        for n, seconds in results:
            fresh += n
            audio_seconds += seconds
            _progress(done + fresh, total, fresh, started, log)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    elapsed = time.time() - started
    return dict(
        utterances=fresh,
        seconds=round(elapsed, 2),
        audio_seconds=round(audio_seconds, 2),
        utterances_per_s=round(fresh / elapsed, 2) if fresh else None,
    )


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    return audio.mean(axis=1), int(rate)  # several channels are averaged to mono


def _audio_problem(path: Path) -> str | None:
    """Why ``path`` cannot be encoded, from its header alone (no decoding): not found, not an audio
    file soundfile reads, too short, or a sample rate the cochlear model does not take; None if fine."""
    import soundfile

    from .cochlea import MIN_SAMPLES, RATES

    if not path.is_file():
        return "not found"
    try:
        info = soundfile.info(str(path))
    except (soundfile.SoundFileError, RuntimeError) as err:
        return f"not an audio file soundfile can read ({str(err).removeprefix(f'Error opening {str(path)!r}: ')})"
    if info.frames < MIN_SAMPLES:
        return f"{info.frames} samples; at least {MIN_SAMPLES} are needed"
    if not RATES[0] <= info.samplerate <= RATES[1]:
        return f"sample rate {info.samplerate} Hz; expected {RATES[0]}..{RATES[1]} Hz"
    return None


def encode_files(files: list[str], out: str | os.PathLike, *, seed: int = 0, log=sys.stderr) -> Path:
    """Encode audio files into one SHD h5 file; a file's class is the name of its folder. Every file is
    checked (:func:`_audio_problem`) before any is encoded; a ValueError names each bad one."""
    from . import cochlea

    paths = [Path(f) for f in files]
    problems = [f"{p}: {why}" for p in paths if (why := _audio_problem(p)) is not None]
    if problems:
        raise ValueError("FILES: " + "; ".join(problems))
    keys = sorted({p.resolve().parent.name for p in paths})
    times, units, labels = [], [], []
    for i, path in enumerate(paths):
        audio, rate = _read_mono(path)
        try:
            spikes = cochlea.encode(audio, rate, seed=seed + i)
        except ValueError as err:  # e.g. silence: nothing to normalise
            raise ValueError(f"FILES: {path}: {err}") from None
        times.append(spikes.times)
        units.append(spikes.units)
        labels.append(keys.index(path.resolve().parent.name))
        print(f"encode-audio: {path}: {len(audio) / rate:.2f} s, {len(spikes.times)} spikes", file=log)
    return shd.write_shd(out, times, units, labels, np.zeros(len(paths), dtype=np.int64), keys)


def _make_shd_cmd(args: argparse.Namespace) -> int:
    if args.per_class < 1:
        raise ValueError(f"--per-class: expected >= 1, got {args.per_class}")
    test_per_class = max(1, args.per_class // 4) if args.test_per_class is None else args.test_per_class
    if test_per_class < 1:
        raise ValueError(f"--test-per-class: expected >= 1, got {test_per_class}")
    if not 1 <= args.workers <= 64:
        raise ValueError(f"--workers: expected 1..64, got {args.workers}")
    if not 0.0 < args.test_speakers < 1.0:
        raise ValueError(f"--test-speakers: expected a fraction in (0, 1), got {args.test_speakers}")
    if not synth.espeak_available():
        raise ValueError("espeak-ng not found: install it with `make espeak` (apt-get install -y espeak-ng)")
    settings = Settings(
        per_class=args.per_class,
        test_per_class=test_per_class,
        seed=args.seed,
        test_speakers=args.test_speakers,
        augment=synth.CLEAN if args.clean else synth.Augment(),
    )
    summary = generate(args.out, settings, workers=args.workers, chunk=args.chunk)
    print(json.dumps(dict(samples=summary["samples"], files=summary["files"], last_run=summary["last_run"])))
    return 0


def _encode_audio_cmd(args: argparse.Namespace) -> int:
    path = encode_files(args.files, args.out, seed=args.seed)
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-shd",
        help="synthesise spoken digits (espeak-ng) into an SHD-format dataset",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--out", required=True, help="output directory (files go to OUT/SHD)")
    p.add_argument("--per-class", type=int, default=200, help="training utterances per class (default 200)")
    p.add_argument(
        "--test-per-class", type=int, default=None, help="test utterances per class (default per-class // 4)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of speakers, augmentation and the cochlear model")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument(
        "--test-speakers",
        type=float,
        default=0.25,
        help="fraction of speakers held out for the test split (default 0.25)",
    )
    p.add_argument("--clean", action="store_true", help="no pitch/speed jitter, reverberation or noise")
    p.add_argument("--chunk", type=int, default=40, help="utterances per resumable part (default 40)")
    p.set_defaults(func=_make_shd_cmd)
    q = sub.add_parser(
        "encode-audio",
        help="encode audio files (wav, flac, ...) into an SHD-format h5 file",
        description="Encode audio files with the cochlear model into one SHD h5 file; each "
        "file's class is the name of the folder it is in.",
    )
    q.add_argument("files", nargs="+", metavar="FILES")
    q.add_argument("--out", required=True, help="output .h5 file")
    q.add_argument("--seed", type=int, default=0, help="seed of the stochastic nerve fibres (file i uses seed+i)")
    q.set_defaults(func=_encode_audio_cmd)
