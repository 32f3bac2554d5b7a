"""Produce the lauscher reference fixture used by tests/test_cochlea.py.

lauscher 1.0.1 (the SHD authors' cochlea code, PyPI) is slow (about a minute per second of audio),
so its outputs on a few short signals are computed once here and stored in
tests/fixtures/lauscher_reference.npz; the tests then need neither lauscher nor espeak-ng.

Signals (all 22,050 Hz, stored as float32 and fed to lauscher as float64 of those values):
  seven_en: espeak-ng -v en-us -s 175 "seven", leading/trailing silence trimmed
  drei_de:  espeak-ng -v de+f3 -p 60 "drei", trimmed the same way
  tone_1k:  0.3 s sine at 1 kHz
  chirp:    0.4 s logarithmic chirp 200 Hz -> 6 kHz

Stored per signal: the audio, the lauscher basilar-membrane RMS per channel, the hair-cell firing
probability summed over time per channel (both deterministic), and for each of SEEDS the spike
counts per channel of the full pipeline (np.random seeded before the stochastic bushy-cell stage),
plus the spike times/units of the first seed.

Run:  .venv/bin/pip install lauscher==1.0.1 && apt-get install -y espeak-ng
      .venv/bin/python scripts/make_lauscher_fixture.py [--out tests/fixtures/lauscher_reference.npz]
Compare spikestab's encoder with a stored fixture (needs neither lauscher nor espeak-ng):
      .venv/bin/python scripts/make_lauscher_fixture.py --compare [--out FIXTURE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

import numpy as np
import soundfile
from scipy.signal import chirp

FS = 22050
SEEDS = (0, 1)
N_CHANNELS = 700


def espeak_word(voice: str, word: str, extra: list[str]) -> np.ndarray:
    """Synthesise `word` with espeak-ng and trim silence (10 ms margin)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.wav")
        subprocess.run(["espeak-ng", "-v", voice, *extra, "-w", path, word], check=True)
        audio, fs = soundfile.read(path, dtype="float32")
    if fs != FS:
        raise RuntimeError(f"espeak-ng wrote {fs} Hz, expected {FS}")
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    margin = FS // 100
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin]


def signals() -> dict[str, np.ndarray]:
    t_tone = np.arange(int(0.3 * FS)) / FS
    t_chirp = np.arange(int(0.4 * FS)) / FS
    return {
        "seven_en": espeak_word("en-us", "seven", ["-s", "175"]),
        "drei_de": espeak_word("de+f3", "drei", ["-p", "60"]),
        "tone_1k": (0.5 * np.sin(2 * np.pi * 1000.0 * t_tone)).astype(np.float32),
        "chirp": (0.5 * chirp(t_chirp, 200.0, t_chirp[-1], 6000.0, method="logarithmic")).astype(np.float32),
    }


def lauscher_reference(audio: np.ndarray) -> dict[str, np.ndarray]:
    """Run lauscher's Wave2Spike chain stage by stage, keeping per-channel summaries."""
    from lauscher.audiowaves import MonoAudioWave
    from lauscher.transformations import BasilarMembrane, BushyCell, HairCell, HanningWindow, RmsNormalizer

    wave = MonoAudioWave(audio.astype(np.float64), FS)
    velocity = (
        wave.transform(RmsNormalizer(0.3)).transform(HanningWindow()).transform(BasilarMembrane(channels=N_CHANNELS))
    )
    probability = velocity.transform(HairCell())
    out = {
        "bm_rms": np.sqrt(np.mean(velocity.channels**2, axis=1)),
        "hc_sum": probability.channels.sum(axis=1),
        "fs_out": np.array(velocity.sample_rate),
    }
    counts = []
    for seed in SEEDS:
        np.random.seed(seed)
        spikes = BushyCell()(probability)
        units = spikes.spike_labels.astype(np.int64)
        counts.append(np.bincount(units, minlength=N_CHANNELS))
        if seed == SEEDS[0]:
            out["times"] = spikes.spike_times.astype(np.float32)
            out["units"] = units.astype(np.uint16)
    out["counts"] = np.stack(counts).astype(np.int32)
    return out


def compare(path: str, seeds: int = 8) -> None:
    """Print how spikestab.data.cochlea matches the lauscher outputs stored in `path` (markdown table)."""
    from spikestab.data import cochlea

    print(
        "| signal | length s | BM RMS max abs diff / max | hair-cell sum max rel diff | count corr "
        f"(ours {seeds} seeds vs lauscher 2 runs) | lauscher run vs run corr | total spikes ours / lauscher "
        "| 10 ms population-rate corr |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with np.load(path) as f:
        for name in f["names"]:
            audio = f[f"{name}/audio"]
            velocity, rate = cochlea.basilar_membrane(cochlea.prepare(audio), FS)
            bm = np.sqrt(np.mean(velocity.astype(np.float64) ** 2, axis=1))
            hc = cochlea.hair_cell(velocity, rate).sum(axis=1)
            ref = f[f"{name}/counts"].astype(np.float64)
            ours = np.mean([cochlea.encode(audio, FS, seed=s).counts() for s in range(seeds)], axis=0)
            spikes = cochlea.encode(audio, FS, seed=0)
            edges = np.arange(0.0, spikes.duration + 0.01, 0.01)
            psth = np.corrcoef(np.histogram(spikes.times, edges)[0], np.histogram(f[f"{name}/times"], edges)[0])
            print(
                f"| {name} | {len(audio) / FS:.2f} | {np.abs(bm - f[f'{name}/bm_rms']).max() / bm.max():.5f} | "
                f"{np.abs(hc / f[f'{name}/hc_sum'] - 1).max():.5f} | "
                f"{np.corrcoef(ours, ref.mean(0))[0, 1]:.3f} | {np.corrcoef(ref[0], ref[1])[0, 1]:.3f} | "
                f"{ours.sum():.0f} / {ref.mean(0).sum():.0f} | {psth[0, 1]:.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures/lauscher_reference.npz")
    parser.add_argument("--compare", action="store_true", help="compare the encoder with the fixture at --out")
    args = parser.parse_args()
    if args.compare:
        compare(args.out)
        return
    sigs = signals()
    arrays: dict[str, np.ndarray] = {"names": np.array(list(sigs)), "fs": np.array(FS), "seeds": np.array(SEEDS)}
    for name, audio in sigs.items():
        start = time.time()
        ref = lauscher_reference(audio)
        arrays[f"{name}/audio"] = audio
        arrays.update({f"{name}/{key}": value for key, value in ref.items()})
        print(
            f"{name}: {len(audio) / FS:.2f} s audio, spikes/run {ref['counts'].sum(1)}, {time.time() - start:.0f} s",
            flush=True,
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
