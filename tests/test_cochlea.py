"""Cochlear encoder: stages against plain reference loops and stored lauscher outputs, tonotopy."""

from pathlib import Path

import numpy as np
import pytest

from spikestab.data import cochlea

FIXTURE = Path(__file__).parent / "fixtures" / "lauscher_reference.npz"
FS = 22050


def tone(freq: float, seconds: float = 0.2, rate: int = FS) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


@pytest.fixture(scope="module")
def lauscher():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def meddis_reference(velocity: np.ndarray, rate: float) -> np.ndarray:
    """Meddis (1986) hair cell as a plain loop over time, vectorised over channels, parameters from
    Meddis (1988) as used by the SHD chain (y 5.05, g 2000, l 2500, r 6580, x 66.3, A 5, B 300, h 50000)."""
    y, g, l, r, x, a, b, h, m = 5.05, 2000.0, 2500.0, 6580.0, 66.3, 5.0, 300.0, 50000.0, 1.0  # noqa: E741 (Meddis)
    dt = 1.0 / rate
    k0 = g * a / (a + b)
    c = np.full(len(velocity), m * y * k0 / (l * k0 + y * (l + r)))
    q, w = c * (l + r) / k0, c * r / x
    out = np.empty(velocity.shape)
    for j in range(velocity.shape[1]):
        s = velocity[:, j].astype(np.float64) + a
        k = np.where(s > 0, g * dt * s / (s + b), 0.0)
        dq = np.where(q < m, y * dt * (m - q), 0.0) - k * q + x * dt * w
        dc = k * q - (l + r) * dt * c
        dw = r * dt * c - x * dt * w
        q, c, w = np.maximum(q + dq, 0), np.maximum(c + dc, 0), np.maximum(w + dw, 0)
        out[:, j] = h * dt * c
    return out


def bushy_reference(probability: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Bushy cell of the SHD chain as a plain loop: 40 fibres per channel, each a Bernoulli(p) draw per
    step with spikes closer than 1 ms to the fibre's previous spike removed, summed through an
    exponential synapse (0.5 ms) into a LIF (1 ms, threshold 1, weight 13e3/40, 1 ms refractory)."""
    n_fib, dt = 40, 1.0 / rate
    n_ch, n_t = probability.shape
    drawn = rng.random((n_ch, n_t, n_fib)) < probability[:, :, None]
    last = np.full((n_ch, n_fib), -np.inf)
    fired = np.zeros((n_ch, n_t))
    for j in range(n_t):
        keep = drawn[:, j] & (j - last >= 1e-3 * rate)
        last[keep] = j
        fired[:, j] = keep.sum(1)
    spikes = np.zeros((n_ch, n_t), dtype=bool)
    for ch in range(n_ch):
        v, syn, counter = 0.0, 0.0, 0.0
        for j in range(n_t):
            if j > 0:
                if counter <= 0 and v >= 1.0:
                    spikes[ch, j - 1], counter, v = True, 1e-3 * rate, 0.0
                elif counter <= 0:
                    v *= np.exp(-dt / 1e-3)
                else:
                    v = 0.0
                syn *= np.exp(-dt / 5e-4)
            syn += fired[ch, j]
            if counter <= 0:
                v = min(v + syn * 13e3 / n_fib * dt, 1.0)
            counter -= 1
    return spikes


def test_transfer_table_interpolation_matches_closed_form():
    freqs, table = cochlea._transfer_table(FS // 2, cochlea.N_CHANNELS)
    f = np.random.default_rng(0).uniform(1, FS // 2, 64)
    exact = cochlea.membrane_transfer(2 * np.pi * f[None, :], cochlea.channel_positions()[:, None])
    i0 = np.searchsorted(freqs, f) - 1
    w = (f - freqs[i0]) / (freqs[i0 + 1] - freqs[i0])
    interp = table[:, i0] * (1 - w) + table[:, i0 + 1] * w
    assert np.abs(interp - exact).max() <= 0.005 * np.abs(exact).max()


def test_hair_cell_matches_reference_loop():
    vel, rate = cochlea.basilar_membrane(cochlea.prepare(tone(700.0, 0.05)), FS)
    got = cochlea.hair_cell(vel[::50], rate)
    np.testing.assert_allclose(got, meddis_reference(vel[::50], rate), rtol=1e-6, atol=1e-12)
    assert got.min() >= 0


def test_bushy_cell_statistics_match_per_fibre_reference():
    rate = FS // 2
    t = np.arange(2000) / rate
    # a quiet channel, a strongly modulated one and a saturated one (refractory effects dominate)
    prob = np.stack([np.full_like(t, 0.006), 0.02 + 0.02 * np.sin(2 * np.pi * 150 * t) ** 2, np.full_like(t, 0.3)])
    fast = np.array([cochlea.bushy_cell(prob, rate, seed=s).sum(1) for s in range(30)])
    rng = np.random.default_rng(0)
    slow = np.array([bushy_reference(prob, rate, rng).sum(1) for _ in range(30)])
    se = np.sqrt(fast.var(0) / 30 + slow.var(0) / 30) + 0.5
    assert np.all(np.abs(fast.mean(0) - slow.mean(0)) < 4 * se), (fast.mean(0), slow.mean(0))
    assert slow.mean(0)[2] > 3 * slow.mean(0)[0]  # the reference itself responds to the drive


def test_fused_encoder_equals_stages_and_is_deterministic():
    audio = tone(1500.0, 0.1) * np.hanning(int(0.1 * FS))
    vel, rate = cochlea.basilar_membrane(cochlea.prepare(audio), FS)
    staged = cochlea.bushy_cell(cochlea.hair_cell(vel, rate), rate, seed=5)
    a, b, c = (cochlea.encode(audio, FS, seed=s) for s in (5, 5, 6))
    steps, units = np.nonzero(staged.T)
    np.testing.assert_array_equal(a.units, units)
    np.testing.assert_allclose(a.times, steps / rate)
    np.testing.assert_array_equal(a.times, b.times)
    assert not np.array_equal(a.units, c.units)
    assert np.all(np.diff(a.times) >= 0) and a.duration == pytest.approx(len(audio) / FS, abs=2 / FS)


@pytest.mark.parametrize("name", ["seven_en", "drei_de", "tone_1k", "chirp"])
def test_matches_lauscher_fixture(lauscher, name):
    audio = lauscher[f"{name}/audio"]
    ref = lauscher[f"{name}/counts"].astype(float)  # [seeds, channels], one lauscher run per seed
    vel, rate = cochlea.basilar_membrane(cochlea.prepare(audio), FS)
    assert rate == int(lauscher[f"{name}/fs_out"])
    # deterministic stages: membrane RMS and summed release probability per channel
    # (lauscher wraps low-channel ringing around circularly where we zero-pad: differences stay
    # below 0.5% of the loudest channel)
    bm_ref = lauscher[f"{name}/bm_rms"]
    np.testing.assert_allclose(
        np.sqrt(np.mean(vel.astype(float) ** 2, 1)), bm_ref, rtol=0.01, atol=0.005 * bm_ref.max()
    )
    np.testing.assert_allclose(cochlea.hair_cell(vel, rate).sum(1), lauscher[f"{name}/hc_sum"], rtol=0.01)
    # stochastic output: per-channel counts correlate >= 0.9, totals within 10% (issue 5). Our mean
    # is over 8 seeds; the fixture holds 2 lauscher runs, which correlate with each other at only
    # 0.79-0.92 (few spikes per channel), so their noise bounds the attainable correlation.
    ours = np.mean([cochlea.encode(audio, FS, seed=s).counts() for s in range(8)], axis=0)
    assert np.corrcoef(ours, ref.mean(0))[0, 1] >= 0.9
    assert abs(ours.sum() / ref.mean(0).sum() - 1) <= 0.1
    # spike timing: the population rate over 10 ms bins follows lauscher's
    spikes = cochlea.encode(audio, FS, seed=0)
    edges = np.arange(0, spikes.duration + 0.01, 0.01)
    r_ours = np.histogram(spikes.times, edges)[0]
    r_ref = np.histogram(lauscher[f"{name}/times"], edges)[0]
    assert np.corrcoef(r_ours, r_ref)[0, 1] >= 0.9


@pytest.mark.parametrize("freq", [200.0, 500.0, 1000.0, 2000.0, 4000.0])
def test_tone_excites_channels_tuned_near_it(freq):
    counts = cochlea.encode(tone(freq), FS, seed=0).counts().astype(float)
    cf = cochlea.centre_frequencies()
    peak = int(np.argmax(np.convolve(counts, np.ones(9) / 9, "same")))
    assert abs(np.log2(cf[peak] / freq)) < 0.4  # within a third of an octave
    # excitation falls off steeply below the tone (half an octave down) and, with the basal tail of
    # the travelling wave, more slowly above it (two octaves up)
    smooth = np.convolve(counts, np.ones(9) / 9, "same")
    for other in (freq / np.sqrt(2), 4 * freq):
        ch = int(np.argmin(np.abs(cf - other)))
        assert smooth[ch] < 0.25 * smooth[peak]


def test_tonotopic_order_and_centre_frequencies():
    cf = cochlea.centre_frequencies()
    assert np.all(np.diff(cf) < 0) and 20e3 < cf[0] < 25e3 and 100 < cf[-1] < 120
    peaks = [
        np.argmax(np.convolve(cochlea.encode(tone(f), FS).counts(), np.ones(9), "same")) for f in (300.0, 900.0, 2700.0)
    ]
    assert peaks[0] > peaks[1] > peaks[2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(audio=np.zeros((10, 2)), sample_rate=FS), "audio"),
        (dict(audio=np.zeros(1000), sample_rate=FS), "audio"),
        (dict(audio=np.ones(1000), sample_rate=4000), "sample_rate"),
        (dict(audio=np.ones(1000), sample_rate=FS, n_channels=0), "n_channels"),
    ],
)
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cochlea.encode(**kwargs)
