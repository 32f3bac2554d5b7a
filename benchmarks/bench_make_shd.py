"""Generation speed of ``make-shd`` (espeak-ng synthesis + cochlear encoding + SHD files).

Runs the real generator (espeak-ng voices, default augmentation) into a temporary directory with the
given number of workers and reports utterances per second of wall time, plus the CPU seconds per
utterance (this process and its children: workers and espeak-ng), which is what the rate would be on
uncontended cores: ``workers / cpu_per_utterance``. With ``--vs-lauscher`` it also times the
reference implementation (PyPI lauscher 1.0.1) and this encoder on the same short utterance,
side by side, and reports the ratio.

    .venv/bin/python benchmarks/bench_make_shd.py --per-class 5 --workers 2 --out runs/bench_make_shd.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import tempfile
import time

import numpy as np

from spikestab.data import cochlea, make_shd, synth


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_generate(per_class: int, workers: int, seed: int) -> dict:
    settings = make_shd.Settings(
        per_class=per_class,
        test_per_class=max(1, per_class // 4),
        seed=seed,
        test_speakers=0.25,
        augment=synth.Augment(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        cochlea.encode(np.sin(np.arange(2205.0)), 22050)  # table + compiled code, as generate does
        cpu0, t0 = cpu_seconds(), time.time()
        summary = make_shd.generate(tmp, settings, workers=workers, chunk=10, log=io.StringIO())
        wall, cpu = time.time() - t0, cpu_seconds() - cpu0
        size = sum(os.path.getsize(f) for f in summary["files"])
    n = sum(summary["samples"].values())
    return dict(
        utterances=n,
        workers=workers,
        wall_s=round(wall, 2),
        utterances_per_s=round(n / wall, 2),
        cpu_s_per_utterance=round(cpu / n, 4),
        uncontended_utterances_per_s=round(workers * n / cpu, 2),
        audio_s_per_utterance=round(summary["last_run"]["audio_seconds"] / n, 3),
        h5_bytes_per_utterance=int(size / n),
    )


def bench_stages(n: int, seed: int) -> dict:
    """Single-process CPU time per utterance of synthesis and of each encoder stage."""
    train, _ = synth.make_speakers(seed)
    utts = synth.plan(train, 1, seed, split=0)[:n]
    t = dict(synth=0.0, prepare_and_membrane=0.0, hair_and_bushy=0.0)
    for utt in utts:
        c0 = cpu_seconds()
        audio, rate = synth.synthesize(utt)
        c1 = cpu_seconds()
        vel, out_rate = cochlea.basilar_membrane(cochlea.prepare(audio), rate)
        c2 = cpu_seconds()
        cochlea._cells(vel, float(out_rate), utt.seed, True)
        c3 = cpu_seconds()
        t["synth"] += c1 - c0
        t["prepare_and_membrane"] += c2 - c1
        t["hair_and_bushy"] += c3 - c2
    return {k: round(v / n, 4) for k, v in t.items()}


def bench_vs_lauscher(seconds: float) -> dict:
    from lauscher.audiowaves import MonoAudioWave
    from lauscher.transformations.wave2spike import Wave2Spike

    rate = 22050
    audio = np.sin(2 * np.pi * 800 * np.arange(int(seconds * rate)) / rate)
    t0 = time.time()
    MonoAudioWave(audio.copy(), rate).transform(Wave2Spike(num_channels=700))
    t_ref = time.time() - t0
    t0 = time.time()
    cochlea.encode(audio, rate)
    t_ours = time.time() - t0
    return dict(signal_s=seconds, lauscher_s=round(t_ref, 2), ours_s=round(t_ours, 4), ratio=round(t_ref / t_ours, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vs-lauscher",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also time lauscher on a tone of this length (0: skip)",
    )
    parser.add_argument("--out", default="runs/bench_make_shd.json")
    args = parser.parse_args()
    result = dict(
        generate=bench_generate(args.per_class, args.workers, args.seed),
        stages_cpu_s_per_utterance=bench_stages(20, args.seed),
        load_average=os.getloadavg(),
    )
    if args.vs_lauscher > 0:
        result["vs_lauscher"] = bench_vs_lauscher(args.vs_lauscher)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
