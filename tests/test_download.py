"""``spikestab download`` against a real HTTP server on 127.0.0.1 (Range requests honoured) that serves small
generated archives in the real formats (SHD h5 files zipped as the publishers zip them): a good download
that the SHD loader and tonic then read, a corrupt file (refused, nothing left in the cache), a transfer cut
midway (resumed with a Range request), the offline message, archives put in place by hand, and the
checksum table, which accepts published digests only."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from spikestab.cli import main
from spikestab.data import download as dl
from spikestab.data import load_task
from spikestab.data.shd import write_shd

KEYS = ["zero", "one", "two", "three"]


def _shd_zip(folder: Path, split: str, n: int, seed: int, name: str = "shd") -> bytes:
    """The bytes of ``<name>_<split>.h5.zip``: a zip holding one SHD-layout h5 file of ``n`` samples."""
    rng = np.random.default_rng(seed)
    times = [np.sort(rng.uniform(0, 0.9, 60)) for _ in range(n)]
    units = [rng.integers(0, 700, 60) for _ in range(n)]
    labels = np.arange(n) % len(KEYS)
    h5 = write_shd(folder / f"{name}_{split}.h5", times, units, labels, rng.integers(0, 3, n), KEYS)
    archive = folder / f"{name}_{split}.h5.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(h5, h5.name)
    return archive.read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET with ``Range: bytes=START-`` support; ``server.cut[name] = n`` sends n bytes of the next response
    for ``name`` (announcing the full length) and closes the connection."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server method name)
        name, rng = self.path.lstrip("/"), self.headers.get("Range")
        self.server.requests.append((name, rng))
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.end_headers()
            return
        if rng:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.server.cut.pop(name, None)
        self.wfile.write(body[start:] if cut is None else body[start : start + cut])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """A loopback HTTP server in a thread: ``files`` (name -> bytes) to serve, ``cut``, ``requests`` seen."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.cut, srv.requests = {}, {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _serve(tmp_path, server, monkeypatch, name: str, sizes: dict[str, int]) -> dict[str, bytes]:
    """Generated archives of dataset ``name`` (split -> samples) on the server, and the table's entry for
    ``name`` naming their SHA-256 digests."""
    made = tmp_path / f"made_{name}"
    made.mkdir()
    blobs = {split: _shd_zip(made, split, n, seed, name) for seed, (split, n) in enumerate(sizes.items())}
    files = tuple(
        dl.Remote(
            f"{name}_{s}.h5.zip",
            f"https://example.invalid/{name}_{s}.h5.zip",
            {"sha256": hashlib.sha256(b).hexdigest()},
            f"{name}_{s}.h5",
        )
        for s, b in blobs.items()
    )
    monkeypatch.setitem(dl.DATASETS, name, dl.RemoteDataset(name.upper(), files, f"https://example.invalid/{name}"))
    server.files.update({f"{name}_{s}.h5.zip": b for s, b in blobs.items()})
    return blobs


@pytest.fixture
def shd(tmp_path, server, monkeypatch):
    """Two generated SHD archives on the server, and the table's SHD entry naming their SHA-256 digests."""
    return _serve(tmp_path, server, monkeypatch, "shd", {"train": 40, "test": 12})


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_good_download_is_read_by_the_loaders_and_tonic(tmp_path, server, shd, capsys):
    root = tmp_path / "data"
    assert main(["download", "shd", "--root", str(root), "--base-url", server.url]) == 0
    assert f"in {root / 'SHD'}" in capsys.readouterr().out
    names = {p.name for p in _files(root)}
    assert names == {"shd_train.h5", "shd_test.h5", "shd_train.h5.zip", "shd_test.h5.zip"}  # no .part left
    task = load_task("shd", root, n_steps=50, dt=0.02)
    assert (len(task.train) + len(task.val), len(task.test), task.class_names) == (40, 12, KEYS)
    import tonic

    events, label = tonic.datasets.SHD(save_to=str(root), train=True)[3]  # offline: the archive is in place
    assert label == 3 and len(events) == 60
    server.requests.clear()
    assert main(["download", "shd", "--root", str(root), "--base-url", server.url, "--no-progress"]) == 0
    assert server.requests == []  # already unpacked: nothing fetched again


def test_corrupt_file_is_refused_and_nothing_stays(tmp_path, server, shd):
    server.files["shd_test.h5.zip"] = shd["test"][:-10] + b"0123456789"  # same size, other bytes
    root = tmp_path / "data"
    with pytest.raises(dl.ChecksumError, match="shd_test.h5.zip: checksum mismatch .*was deleted"):
        dl.download("shd", root, base_url=server.url, progress=False)
    # the train archive passed and was unpacked; of the corrupt one nothing is left
    assert {p.name for p in _files(root)} == {"shd_train.h5", "shd_train.h5.zip"}
    empty = tmp_path / "empty"
    server.files["shd_train.h5.zip"] = b"not the published file"
    with pytest.raises(dl.ChecksumError):
        dl.download("shd", empty, base_url=server.url, progress=False)
    assert not empty.exists()  # not even the folders it made


def test_cut_transfer_resumes_with_a_range_request(tmp_path, server, shd, capsys):
    half = len(shd["train"]) // 2
    server.cut["shd_train.h5.zip"] = half
    root = tmp_path / "data"
    dl.download("shd", root, base_url=server.url, progress=False)
    assert ("shd_train.h5.zip", f"bytes={half}-") in server.requests
    assert "transfer cut" in capsys.readouterr().err
    assert (root / "SHD" / "shd_train.h5.zip").read_bytes() == shd["train"]

    # no retries: the call fails, keeps what came, and the next call continues from there
    again = tmp_path / "again"
    server.cut["shd_train.h5.zip"] = half
    with pytest.raises(dl.DownloadError, match=f"cut after {half} of {len(shd['train'])} bytes"):
        dl.download("shd", again, base_url=server.url, retries=0, progress=False)
    assert (again / "SHD" / "shd_train.h5.zip.part").stat().st_size == half
    server.requests.clear()
    dl.download("shd", again, base_url=server.url, retries=0, progress=False)
    assert server.requests[0] == ("shd_train.h5.zip", f"bytes={half}-")
    assert not list(again.rglob("*.part")) and (again / "SHD" / "shd_test.h5").is_file()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_offline_error_says_where_to_put_the_files(tmp_path, shd, capsys):
    root = tmp_path / "data"
    assert main(["download", "shd", "--root", str(root), "--base-url", _closed_port_url(), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "could not reach" in err and "by hand" in err
    assert f"https://example.invalid/shd_train.h5.zip  -> {root / 'SHD' / 'shd_train.h5.zip'}" in err
    assert f"run `spikestab download shd --root {root}` again" in err
    assert _files(root) == []


def test_archives_put_in_place_by_hand_are_checked_and_unpacked_offline(tmp_path, shd):
    folder = tmp_path / "data" / "SHD"
    folder.mkdir(parents=True)
    for split, blob in shd.items():
        (folder / f"shd_{split}.h5.zip").write_bytes(blob)
    assert dl.download("shd", tmp_path / "data", base_url=_closed_port_url(), progress=False) == folder
    assert (folder / "shd_train.h5").is_file() and (folder / "shd_test.h5").is_file()
    (folder / "shd_test.h5").unlink()
    (folder / "shd_test.h5.zip").write_bytes(b"a damaged copy")
    with pytest.raises(dl.ChecksumError, match="left in place"):  # the user's own file is not deleted
        dl.download("shd", tmp_path / "data", base_url=_closed_port_url(), progress=False)
    assert (folder / "shd_test.h5.zip").read_bytes() == b"a damaged copy"


def test_the_table_holds_published_digests_only():
    for name, spec in dl.DATASETS.items():
        assert spec.files and spec.page.startswith("https://"), name
        for remote in spec.files:
            assert remote.url.startswith("https://") and remote.checksums, (name, remote.name)
    with pytest.raises(ValueError, match="no published checksum"):
        dl.Remote("x.zip", "https://example.invalid/x.zip", {}, "x")
    with pytest.raises(ValueError, match="not a lower-case hex digest"):
        dl.Remote("x.zip", "https://example.invalid/x.zip", {"sha256": "0" * 63}, "x")
    with pytest.raises(ValueError, match="not a lower-case hex digest"):
        dl.Remote("x.zip", "https://example.invalid/x.zip", {"sha1": "0" * 40}, "x")


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    with pytest.raises(ValueError, match="dataset must be one of"):
        dl.download("mnist", tmp_path / "a")
    with pytest.raises(ValueError, match="base_url must start with"):
        dl.download("shd", tmp_path / "a", base_url="ftp://example.invalid")
    monkeypatch.setenv(dl.BASE_URL_ENV, "127.0.0.1:8000")
    with pytest.raises(ValueError, match="base_url must start with"):
        dl.download("shd", tmp_path / "a")
    (tmp_path / "file").write_text("")
    assert main(["download", "shd", "--root", str(tmp_path / "file")]) == 2
    assert "root: " in capsys.readouterr().err
    assert main(["download", "shd", "--root", str(tmp_path / "a"), "--retries", "-1"]) == 2
    assert "retries must be" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_default_folder_is_the_loaders_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKESTAB_DATA", str(tmp_path))
    assert dl.dataset_folder("shd") == tmp_path / "shd" / "SHD"
    assert dl.dataset_folder("nmnist", tmp_path / "x") == tmp_path / "x" / "NMNIST"


def test_archive_members_outside_the_folder_are_refused(tmp_path, server, monkeypatch):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escaped.txt", "x")
        z.writestr("inside", "x")
    blob = evil.read_bytes()
    remote = dl.Remote(
        "evil.zip", "https://example.invalid/evil.zip", {"sha256": hashlib.sha256(blob).hexdigest()}, "inside"
    )
    server.files["evil.zip"] = blob
    with pytest.raises(ValueError, match="refusing the archive member"):
        dl.fetch_dataset(
            dl.RemoteDataset("EVIL", (remote,), "https://example.invalid"),
            tmp_path / "out",
            base_url=server.url,
            progress=False,
        )
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "inside").exists()


TRAIN_SHD = ["train", "--task", "shd", "--task-option", "n_steps=20", "--task-option", "dt=0.05", "--layers", "8"]
TRAIN_SHD += ["--epochs", "1", "--batch-size", "8", "--no-progress", "--no-figures", "--threads", "1"]


def test_train_download_fetches_missing_files_on_first_use_only(tmp_path, server, shd, monkeypatch, capsys):
    monkeypatch.setenv("SPIKESTAB_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv(dl.BASE_URL_ENV, server.url)
    assert main([*TRAIN_SHD, "--download", "--out", str(tmp_path / "run")]) == 0
    folder = tmp_path / "cache" / "shd" / "SHD"
    said = capsys.readouterr().out
    assert f"shd: files not found; --download fetches the official SHD archives into {folder}" in said
    assert (folder / "shd_train.h5").is_file() and (folder / "shd_test.h5").is_file()
    assert (tmp_path / "run" / "results.json").is_file()
    server.requests.clear()
    assert main([*TRAIN_SHD, "--download", "--out", str(tmp_path / "again")]) == 0
    assert server.requests == [] and "files not found" not in capsys.readouterr().out  # in place: no transfer
    by_hand = tmp_path / "mine"  # files put in --data-dir itself (not in its SHD folder) count as there too
    by_hand.mkdir()
    for name in ("shd_train.h5", "shd_test.h5"):
        (by_hand / name).write_bytes((folder / name).read_bytes())
    assert main([*TRAIN_SHD, "--download", "--data-dir", str(by_hand), "--out", str(tmp_path / "third")]) == 0
    assert server.requests == [] and not (by_hand / "SHD").exists()


def test_train_without_files_names_the_folder_and_download(tmp_path, capsys):
    empty = tmp_path / "empty"
    assert main([*TRAIN_SHD, "--data-dir", str(empty), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"put shd_train.h5 and shd_test.h5 (SHD h5 layout) in {empty} or {empty / 'SHD'}" in err
    assert "spikestab train --task shd --download" in err
    assert not (tmp_path / "run").exists()


def test_train_download_refusals_come_before_any_work(tmp_path, shd, monkeypatch, capsys):
    monkeypatch.setenv(dl.BASE_URL_ENV, _closed_port_url())
    out, data = tmp_path / "run", tmp_path / "data"
    assert main([*TRAIN_SHD, "--download", "--data-dir", str(data), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "could not reach" in err and f"-> {data / 'SHD' / 'shd_train.h5.zip'}" in err
    assert not out.exists() and _files(data) == []
    assert main(["train", "--task", "randman", "--download", "--out", str(out)]) == 2
    assert "--download fetches the files of the tasks shd, ssc; task 'randman' reads no published files" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_ssc_task_downloads_and_trains_on_its_published_splits(tmp_path, server, monkeypatch, capsys):
    """SSC: three published splits (train, valid, test), fetched by `spikestab train --task ssc --download`
    and read as they are (no split of the training file), binned as SHD is."""
    _serve(tmp_path, server, monkeypatch, "ssc", {"train": 30, "valid": 9, "test": 11})
    monkeypatch.setenv("SPIKESTAB_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv(dl.BASE_URL_ENV, server.url)
    train_ssc = ["train", "--task", "ssc", *TRAIN_SHD[3:]]
    assert main([*train_ssc, "--download", "--out", str(tmp_path / "run")]) == 0
    folder = tmp_path / "cache" / "ssc" / "SSC"
    assert {p.name for p in folder.glob("*.h5")} == {"ssc_train.h5", "ssc_valid.h5", "ssc_test.h5"}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task"] == "ssc" and results["test"]["accuracy"] is not None
    task = load_task("ssc", None, n_steps=20, dt=0.05)
    assert (len(task.train), len(task.val), len(task.test), task.class_names) == (30, 9, 11, KEYS)
    # the same file read as SHD's test split gives the same batches: one encoding for both tasks
    shd_dir = tmp_path / "as_shd"
    shd_dir.mkdir()
    for ssc_split, shd_split in (("train", "train"), ("test", "test")):
        (shd_dir / f"shd_{shd_split}.h5").write_bytes((folder / f"ssc_{ssc_split}.h5").read_bytes())
    as_shd = load_task("shd", shd_dir, n_steps=20, dt=0.05)
    assert torch.equal(as_shd.test.densify(range(11)), task.test.densify(range(11)))


def test_ssc_without_files_names_its_three_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    assert main(["train", "--task", "ssc", "--data-dir", str(empty), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"put ssc_train.h5, ssc_valid.h5 and ssc_test.h5 (SSC h5 layout) in {empty} or {empty / 'SSC'}" in err
    assert "spikestab train --task ssc --download" in err and not (tmp_path / "run").exists()
