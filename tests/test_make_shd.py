"""make-shd / encode-audio: SHD files that both loaders read, label names from extra/keys, resume."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from spikestab.cli import main
from spikestab.data import cochlea, load_task, make_shd, shd, synth

RATE = 22050
SPEAKERS = (
    [
        synth.Speaker(id=i, variant=f"v{i}", accent="en-us", pitch=50, speed=170, gender=g)
        for i, g in ((0, "male"), (2, "female"), (3, "male"))
    ],
    [synth.Speaker(id=1, variant="v1", accent="en-gb", pitch=40, speed=150, gender="female")],
)
SETTINGS = make_shd.Settings(per_class=1, test_per_class=1, seed=3, test_speakers=0.25, augment=synth.CLEAN)
CALLS: list[synth.Utterance] = []


def tone_source(utt: synth.Utterance, augment: synth.Augment) -> tuple[np.ndarray, int]:
    """Stand-in for espeak-ng: a 60 ms tone whose pitch encodes the class (220 Hz * 2^(label/6))."""
    CALLS.append(utt)
    t = np.arange(int(0.06 * RATE)) / RATE
    phase = np.random.default_rng(utt.seed).uniform(0, 2 * np.pi)
    return np.sin(2 * np.pi * 220 * 2 ** (utt.label / 6) * t + phase), RATE


def failing_after(n: int):
    def source(utt, augment):
        if len(CALLS) >= n:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a run
        return tone_source(utt, augment)

    return source


def run(out, source=tone_source, settings=SETTINGS, chunk=6):
    CALLS.clear()
    return make_shd.generate(out, settings, workers=1, chunk=chunk, source=source, speakers=SPEAKERS, log=io.StringIO())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("shd_full")
    run(out)
    return out


def test_files_in_shd_layout_and_read_by_spikestab(dataset):
    folder = dataset / "SHD"
    train, test = shd.read_shd(folder / "shd_train.h5"), shd.read_shd(folder / "shd_test.h5")
    assert train["keys"] == test["keys"] == list(synth.KEYS)
    assert len(train["labels"]) == len(test["labels"]) == 20
    assert sorted(train["labels"]) == list(range(20))
    assert set(train["speakers"]) == {0, 2, 3} and set(test["speakers"]) == {1}  # speaker-disjoint
    assert [g.decode() for g in train["meta"]["gender"]] == ["male", "female", "female", "male"]
    # the stored spikes are the encoder's output for that utterance (times rounded to float16)
    plan = synth.plan(SPEAKERS[0], 1, SETTINGS.seed, split=0)
    i = 7
    expected = cochlea.encode(*tone_source(plan[i], synth.CLEAN), seed=plan[i].seed)
    np.testing.assert_array_equal(train["units"][i], expected.units)
    np.testing.assert_allclose(train["times"][i], expected.times, rtol=1e-3)
    task = load_task("shd", dataset)
    assert task.class_names == list(synth.KEYS) and task.input_size == 700 and len(task.test) == 20
    summary = json.loads((dataset / "make_shd.json").read_text())
    assert summary["samples"] == {"train": 20, "test": 20} and not (dataset / ".parts").exists()


def test_label_names_come_from_extra_keys(dataset):
    """Each sample's label indexes extra/keys at the class the source was asked to say."""
    data = shd.read_shd(dataset / "SHD" / "shd_train.h5")
    plan = synth.plan(SPEAKERS[0], 1, SETTINGS.seed, split=0)
    spoken = [u.text.replace("ü", "ue") for u in plan]
    assert [data["keys"][label] for label in data["labels"]] == spoken
    # tonotopy carries the label: the tone's pitch rises with the label, so the busiest channel moves
    # towards the base (lower unit ids) as the label grows
    peaks = [np.argmax(np.convolve(np.bincount(u, minlength=700), np.ones(15), "same")) for u in data["units"]]
    order = np.argsort(data["labels"])
    assert np.corrcoef(np.array(peaks)[order], np.arange(20))[0, 1] < -0.9


def test_tonic_reads_the_files(dataset):
    tonic = pytest.importorskip("tonic", reason="tonic is in the test extra; not installed here")
    for train, n in ((True, 20), (False, 20)):
        ds = tonic.datasets.SHD(save_to=str(dataset), train=train)
        assert len(ds) == n
        assert [k.decode() if isinstance(k, bytes) else k for k in ds.classes] == list(synth.KEYS)
    events, label = ds[4]
    data = shd.read_shd(dataset / "SHD" / "shd_test.h5")
    np.testing.assert_array_equal(events["x"], data["units"][4])
    assert label == data["labels"][4]


def test_interrupted_run_resumes_without_redoing_work(tmp_path, dataset):
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run(out, source=failing_after(15))
    parts = sorted(p.name for p in (out / ".parts").glob("*.npz"))
    assert parts == ["train_000000_000006.npz", "train_000006_000012.npz"]  # 2 chunks of 6 finished
    assert not list((out / ".parts").glob("*tmp*")) and not (out / "SHD").exists()
    run(out)
    assert len(CALLS) == 40 - 12  # only the unfinished utterances were made again
    assert sorted({(u.label, u.speaker.id) for u in CALLS}) == sorted(
        {(u.label, u.speaker.id) for u in synth.plan(SPEAKERS[0], 1, 3, 0)[12:] + synth.plan(SPEAKERS[1], 1, 3, 1)}
    )
    for split in ("train", "test"):  # identical to the uninterrupted run
        a, b = (shd.read_shd(d / "SHD" / f"shd_{split}.h5") for d in (out, dataset))
        assert all(np.array_equal(x, y) for x, y in zip(a["times"], b["times"]))
        assert all(np.array_equal(x, y) for x, y in zip(a["units"], b["units"]))
        np.testing.assert_array_equal(a["labels"], b["labels"])
    run(out)  # a finished dataset is not regenerated
    assert CALLS == []


def test_resume_refuses_other_settings(tmp_path, dataset):
    with pytest.raises(ValueError, match="other settings"):
        run(dataset, settings=make_shd.Settings(2, 1, 3, 0.25, synth.CLEAN))
    out = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        run(out, source=failing_after(7))
    with pytest.raises(ValueError, match="other settings"):
        run(out, settings=make_shd.Settings(1, 1, 4, 0.25, synth.CLEAN))


def test_encode_audio_cli(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    files = []
    for word, freq in (("high", 3000.0), ("low", 300.0), ("high", 2500.0)):
        (tmp_path / word).mkdir(exist_ok=True)
        path = tmp_path / word / f"{len(files)}.wav"
        t = np.arange(int(0.1 * 16000)) / 16000
        soundfile.write(path, 0.3 * np.sin(2 * np.pi * freq * t), 16000)
        files.append(str(path))
    out = tmp_path / "mine.h5"
    assert main(["encode-audio", *files, "--out", str(out)]) == 0
    data = shd.read_shd(out)
    assert data["keys"] == ["high", "low"] and list(data["labels"]) == [0, 1, 0]
    assert np.median(data["units"][0]) < np.median(data["units"][1])  # high tone -> basal (low ids)
    assert main(["encode-audio", str(tmp_path / "missing.wav"), "--out", str(out)]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--per-class", "0"], "--per-class"),
        (["--workers", "0"], "--workers"),
        (["--test-speakers", "1.5"], "--test-speakers"),
    ],
)
def test_make_shd_cli_rejects_bad_arguments(tmp_path, capsys, args, message):
    assert main(["make-shd", "--out", str(tmp_path / "x"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not synth.espeak_available(), reason="espeak-ng not installed (make espeak)")
def test_espeak_speakers_and_synthesis_are_deterministic():
    train, test = synth.make_speakers(0)
    again = synth.make_speakers(0)
    assert (train, test) == again and not {s.variant for s in train} & {s.variant for s in test}
    assert sorted(s.id for s in train + test) == list(range(len(synth.VARIANTS)))
    utt = synth.plan(train, 1, 0, split=0)[17]  # German "sieben"
    assert utt.text == "sieben" and utt.voice == "de"
    a, rate = synth.synthesize(utt)
    b, _ = synth.synthesize(utt)
    np.testing.assert_array_equal(a, b)
    assert rate == RATE and 0.2 < len(a) / rate < 2.0
    other = synth.synthesize(synth.Utterance(label=17, speaker=test[0], seed=utt.seed))[0]
    assert len(other) != len(a) or not np.array_equal(other, a)


@pytest.mark.slow
@pytest.mark.skipif(not synth.espeak_available(), reason="espeak-ng not installed (make espeak)")
def test_make_shd_with_espeak_end_to_end(tmp_path):
    settings = make_shd.Settings(per_class=1, test_per_class=1, seed=0, test_speakers=0.25, augment=synth.Augment())
    summary = make_shd.generate(tmp_path, settings, workers=2, chunk=10, log=io.StringIO())
    assert summary["samples"] == {"train": 20, "test": 20}
    data = shd.read_shd(tmp_path / "SHD" / "shd_train.h5")
    assert data["keys"] == list(synth.KEYS)
    assert min(len(u) for u in data["units"]) > 500  # every word produced a spike pattern
    assert Path(summary["files"][1]).is_file()


def test_encode_audio_names_every_file_it_cannot_encode_before_encoding_any(tmp_path, capsys):
    soundfile = pytest.importorskip("soundfile")
    (tmp_path / "yes").mkdir()
    t = np.arange(1600) / 16000
    good = tmp_path / "yes" / "good.wav"
    soundfile.write(good, 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    text = tmp_path / "yes" / "notes.txt"
    text.write_text("a text file, not audio\n")
    renamed = tmp_path / "yes" / "fake.wav"
    renamed.write_text("a text file named .wav\n")
    short = tmp_path / "yes" / "short.wav"
    soundfile.write(short, np.ones(10) * 0.1, 16000)
    slow = tmp_path / "yes" / "slow.wav"
    soundfile.write(slow, 0.3 * np.sin(2 * np.pi * 440 * t), 4000)
    out = tmp_path / "mine.h5"
    assert main(["encode-audio", str(good), str(text), str(renamed), str(short), str(slow), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(good) + ":" not in err, err
    assert f"{text}: not an audio file soundfile can read" in err and f"{renamed}: not an audio file" in err
    assert f"{short}: 10 samples; at least 16 are needed" in err
    assert f"{slow}: sample rate 4000 Hz; expected 8000..192000 Hz" in err
    silent = tmp_path / "yes" / "silent.wav"
    soundfile.write(silent, np.zeros(1600), 16000)
    with pytest.raises(ValueError, match=re.escape(f"FILES: {silent}: audio: must be finite and not all zeros")):
        make_shd.encode_files([str(good), str(silent)], out, log=io.StringIO())
    assert not out.exists()
