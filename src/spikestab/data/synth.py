"""Spoken digits synthesised offline with espeak-ng: the 20 SHD classes from many synthetic speakers.

A *speaker* is one espeak-ng voice variant (voice quality, formants, gender) with its own English
accent, base pitch and base speed; like the SHD speakers, each one says the English digits (in its
accent) and the German digits (voice ``de``). Speakers are split into disjoint train and test sets (the
test variants are never heard in training). Each utterance jitters pitch and speed around the
speaker's base and may add reverberation and white noise. Everything is a function of the seed and the
utterance index, so a sample can be regenerated alone (that is what makes resuming possible).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

ENGLISH = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GERMAN = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
# class names written to extra/keys (ASCII, as in the SHD files); label = index
KEYS = ENGLISH + tuple(w.replace("ü", "ue") for w in GERMAN)
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# espeak-ng 1.51 variants that sound like a human talker (robotic, whispering and joke variants left out)
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "adam",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "Denis",
    "Diogo",
    "ed",
    "edward",
    "Gene",
    "gustave",
    "Henrique",
    "Hugo",
    "iven",
    "iven2",
    "Jacky",
    "john",
    "Lee",
    "linda",
    "marcelo",
    "Marco",
    "Mario",
    "max",
    "Michael",
    "michel",
    "miguel",
    "Mike",
    "Nguyen",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "steph",
    "steph2",
    "steph3",
    "Storm",
    "zac",
    "anika",
    "grandpa",
    "grandma",
    "norbert",
    "sandro",
    "shelby",
    "travis",
    "victor",
)


@dataclass(frozen=True)
class Speaker:
    """A synthetic talker: espeak-ng variant, English accent, base pitch (0-99) and speed (words/min)."""

    id: int
    variant: str
    accent: str
    pitch: int
    speed: int
    gender: str


@dataclass(frozen=True)
class Augment:
    """Per-utterance variation: pitch/speed jitter, reverberation and white noise (probabilities, ranges)."""

    pitch_jitter: int = 8
    speed_jitter: float = 0.1
    reverb_prob: float = 0.5
    rt60: tuple[float, float] = (0.1, 0.5)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    pad: tuple[float, float] = (0.02, 0.1)

    def __post_init__(self) -> None:
        for name in ("reverb_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)}")
        for name in ("rt60", "snr_db", "pad"):
            lo, hi = getattr(self, name)
            if not lo <= hi or (name != "snr_db" and lo < 0):
                raise ValueError(f"{name}: expected a range (low, high) with 0 <= low <= high, got {(lo, hi)}")


CLEAN = Augment(pitch_jitter=0, speed_jitter=0.0, reverb_prob=0.0, noise_prob=0.0, pad=(0.02, 0.02))


@dataclass(frozen=True)
class Utterance:
    """One sample to generate: class label, speaker and the seed of its random choices."""

    label: int
    speaker: Speaker
    seed: int

    @property
    def text(self) -> str:
        return ENGLISH[self.label] if self.label < 10 else GERMAN[self.label - 10]

    @property
    def voice(self) -> str:
        return self.speaker.accent if self.label < 10 else "de"


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@lru_cache(maxsize=1)
def variant_genders() -> dict[str, str]:
    """Gender ("male"/"female") of each installed espeak-ng variant, from ``espeak-ng --voices=variant``."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed: run `make espeak` (apt-get install -y espeak-ng)")
    listing = subprocess.run(
        ["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True
    ).stdout.splitlines()[1:]
    genders = {}
    for line in listing:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/"):
            genders[cols[4][3:]] = "female" if cols[2].endswith("F") else "male"
    return genders


def make_speakers(seed: int, test_fraction: float = 0.25) -> tuple[list[Speaker], list[Speaker]]:
    """All speakers (one per variant), split into disjoint (train, test) lists, deterministic for a seed."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a fraction in (0, 1), got {test_fraction}")
    genders = variant_genders()
    missing = [v for v in VARIANTS if v not in genders]
    if missing:
        raise RuntimeError(f"espeak-ng lacks the voice variants {missing}; espeak-ng 1.51 is expected")
    rng = np.random.default_rng([seed, 0x5EED])
    order = rng.permutation(len(VARIANTS))
    speakers = [
        Speaker(
            id=i,
            variant=VARIANTS[k],
            accent=ACCENTS[int(rng.integers(len(ACCENTS)))],
            pitch=int(rng.integers(20, 81)),
            speed=int(rng.integers(120, 211)),
            gender=genders[VARIANTS[k]],
        )
        for i, k in enumerate(order)
    ]
    n_test = max(1, round(test_fraction * len(speakers)))
    return speakers[n_test:], speakers[:n_test]


def plan(speakers: list[Speaker], per_class: int, seed: int, split: int) -> list[Utterance]:
    """Utterances of one split: for each class, `per_class` samples cycling through the speakers
    (utterance k of class c by speaker (k + c) mod n, so that every class hears every speaker)."""
    if per_class < 1:
        raise ValueError(f"per_class: expected >= 1, got {per_class}")
    rng = np.random.default_rng([seed, split])
    seeds = rng.integers(0, 2**31 - 1, size=per_class * len(KEYS))
    n = len(KEYS)
    return [
        Utterance(label=i % n, speaker=speakers[(i // n + i % n) % len(speakers)], seed=int(seeds[i]))
        for i in range(len(seeds))
    ]


def espeak(text: str, voice: str, variant: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """Synthesise `text` with espeak-ng (no final pause); returns (float32 samples, sample rate)."""
    import soundfile

    cmd = ["espeak-ng", "-z", "-v", f"{voice}+{variant}", "-p", str(pitch), "-s", str(speed), "--stdout", text]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return audio, int(rate)


def trim(audio: np.ndarray, rate: int, floor_db: float = -50.0) -> np.ndarray:
    """Cut leading and trailing parts quieter than `floor_db` below the peak."""
    loud = np.flatnonzero(np.abs(audio) > np.abs(audio).max() * 10 ** (floor_db / 20))
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def synthesize(utt: Utterance, augment: Augment = Augment()) -> tuple[np.ndarray, int]:
    """Audio of one utterance (float32, espeak-ng's 22,050 Hz), deterministic for ``utt.seed``."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(utt.seed)
    spk = utt.speaker
    pitch = int(np.clip(spk.pitch + rng.integers(-augment.pitch_jitter, augment.pitch_jitter + 1), 0, 99))
    speed = int(round(spk.speed * (1 + rng.uniform(-augment.speed_jitter, augment.speed_jitter))))
    audio, rate = espeak(utt.text, utt.voice, spk.variant, pitch, max(speed, 80))
    x = trim(audio.astype(np.float64), rate)
    level = np.sqrt(np.mean(x**2))
    if rng.random() < augment.reverb_prob:  # exponentially decaying noise tail (60 dB over rt60)
        rt60 = rng.uniform(*augment.rt60)
        t = np.arange(int(rt60 * rate)) / rate
        tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
        tail *= rng.uniform(0.3, 1.0) / np.sqrt(np.sum(tail**2))
        x = np.concatenate([x, np.zeros(len(tail))])
        x = x + fftconvolve(x, tail)[: len(x)]
    pad = [int(rng.uniform(*augment.pad) * rate) for _ in range(2)]
    x = np.concatenate([np.zeros(pad[0]), x, np.zeros(pad[1])])
    if rng.random() < augment.noise_prob:
        snr = rng.uniform(*augment.snr_db)
        x = x + rng.standard_normal(len(x)) * level * 10 ** (-snr / 20)
    return x.astype(np.float32), rate
