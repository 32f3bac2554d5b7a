"""``spikestab download shd|ssc|nmnist``: the real datasets' official archives, fetched into the data cache,
checked against their published checksums, then unpacked where spikestab's loaders and tonic look for them.

- **Where**: ``<root>/<FOLDER>/`` with ``root`` the task's data folder (default ``default_data_dir(name)``,
  i.e. ``$SPIKESTAB_DATA/<name>``, default ``~/.cache/spikestab/data/<name>``) and ``FOLDER`` the name tonic
  uses (``SHD``, ``SSC``, ``NMNIST``). ``spikestab train --task shd`` then finds ``shd_train.h5`` without
  ``--data-dir``, and ``tonic.datasets.SHD(save_to=root)`` finds its archive and file without downloading
  (the archives are kept for that reason).
- **Checksums**: every file is accepted only if it matches every digest the table ``DATASETS`` holds for it,
  and a ``Remote`` without a digest cannot be built, so an unchecked file is never accepted. No SHA-256 of
  these files is published; the table carries the MD5 digests that tonic 1.7.0 and SpikingJelly 2.0.0 both
  check the same official files against (identical values in both; not compared here with the real files,
  which this project's machines cannot reach). ``Remote`` takes a ``sha256`` digest too, for a file whose
  SHA-256 is published.
- **Atomic and resumable**: bytes go to ``<archive>.part``; a cut transfer is continued with an HTTP
  ``Range`` request (within the same call, up to ``retries`` times, and by the next call), and only a file
  whose checksums match is renamed (``os.replace``) to its final name. A file that fails its checksum is
  deleted. Archives are unpacked into a temporary folder, then renamed into place.
- **Offline**: the error names the official URLs and the folder in which to put the archives by hand; the
  same command then checks and unpacks them without the network.
- **On first use**: ``spikestab train --task shd --download`` calls ``fetch_task_files``, which downloads
  only when the unpacked files are in neither ``<root>`` nor ``<root>/<FOLDER>`` (where the loader looks);
  ``TASK_DATASETS`` says which training task reads which dataset (N-MNIST has no built-in task: it trains
  from Python through ``data.external.task_from_datasets``).
- **Mirrors and tests**: ``base_url`` (or ``$SPIKESTAB_DATA_URL``) replaces the official locations by
  ``<base_url>/<archive name>``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .tasks import default_data_dir

BASE_URL_ENV = "SPIKESTAB_DATA_URL"
DIGEST_LENGTHS = {"md5": 32, "sha256": 64}  # the algorithms a checksum may use, and their hex lengths
CHUNK = 1 << 20
ZENKELAB = "https://zenkelab.org/datasets/"
MENDELEY = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"


class DownloadError(OSError):
    """A transfer failed (network, server, cut connection); what was received is kept to resume."""


class ChecksumError(DownloadError):
    """A file's digest differs from the published one; the downloaded file was deleted."""


class _Interrupted(DownloadError):
    """The connection closed before the whole file came: what came is kept and the transfer resumes."""


@dataclass(frozen=True)
class Remote:
    """One published file: its archive name in the cache, its official URL, its published digests
    (algorithm -> hex) and the file or folder that unpacking it produces."""

    name: str
    url: str
    checksums: Mapping[str, str]
    unpacks_to: str

    def __post_init__(self) -> None:
        if not self.checksums:
            raise ValueError(f"{self.name}: no published checksum; a file is accepted only against one")
        for algorithm, digest in self.checksums.items():
            n = DIGEST_LENGTHS.get(algorithm)
            if n is None or len(digest) != n or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    f"{self.name}: {algorithm} checksum {digest!r} is not a lower-case hex digest "
                    f"of a known algorithm ({', '.join(DIGEST_LENGTHS)})"
                )


@dataclass(frozen=True)
class RemoteDataset:
    """A dataset's published files, the folder they go to (tonic's name for it) and where it is described."""

    folder: str
    files: tuple[Remote, ...]
    page: str
    about: str = field(default="")


DATASETS: dict[str, RemoteDataset] = {
    "shd": RemoteDataset(
        "SHD",
        (
            Remote(
                "shd_train.h5.zip",
                ZENKELAB + "shd_train.h5.zip",
                {"md5": "f3252aeb598ac776c1b526422d90eecb"},
                "shd_train.h5",
            ),
            Remote(
                "shd_test.h5.zip",
                ZENKELAB + "shd_test.h5.zip",
                {"md5": "1503a5064faa34311c398fb0a1ed0a6f"},
                "shd_test.h5",
            ),
        ),
        "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/",
        "Spiking Heidelberg Digits (Cramer et al. 2020), CC BY 4.0",
    ),
    "ssc": RemoteDataset(
        "SSC",
        (
            Remote(
                "ssc_train.h5.zip",
                ZENKELAB + "ssc_train.h5.zip",
                {"md5": "d102be95e7144fcc0553d1f45ba94170"},
                "ssc_train.h5",
            ),
            Remote(
                "ssc_valid.h5.zip",
                ZENKELAB + "ssc_valid.h5.zip",
                {"md5": "b4eee3516a4a90dd0c71a6ac23a8ae43"},
                "ssc_valid.h5",
            ),
            Remote(
                "ssc_test.h5.zip",
                ZENKELAB + "ssc_test.h5.zip",
                {"md5": "a35ff1e9cffdd02a20eb850c17c37748"},
                "ssc_test.h5",
            ),
        ),
        "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/",
        "Spiking Speech Commands (Cramer et al. 2020), CC BY 4.0",
    ),
    "nmnist": RemoteDataset(
        "NMNIST",
        (
            Remote(
                "train.zip",
                MENDELEY + "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",
                {"md5": "20959b8e626244a1b502305a9e6e2031"},
                "Train",
            ),
            Remote(
                "test.zip",
                MENDELEY + "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",
                {"md5": "69ca8762b2fe404d9b9bad1103e97832"},
                "Test",
            ),
        ),
        "https://www.garrickorchard.com/datasets/n-mnist",
        "N-MNIST (Orchard et al. 2015), CC BY-SA 4.0",
    ),
}


# the ``spikestab train`` tasks that read a dataset of this table: task -> dataset
TASK_DATASETS = {"shd": "shd", "ssc": "ssc"}


def installed(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether dataset ``name``'s unpacked files are all in ``root`` or ``root/FOLDER`` (``root`` defaults to
    ``default_data_dir(name)``): the two places the task's loader looks."""
    spec = _spec(name)
    base = Path(root).expanduser() if root is not None else default_data_dir(name)
    return any(all((d / r.unpacks_to).exists() for r in spec.files) for d in (base, base / spec.folder))


def fetch_task_files(
    task: str, data_dir: str | os.PathLike | None = None, *, progress: bool = True, log: Callable[[str], None] = print
) -> bool:
    """``spikestab train --download``: fetch the official files of ``task`` into its data folder
    (``data_dir``, default the cache) when they are missing, saying so; True when it downloaded. ValueError
    for a task with no published files, ``DownloadError`` as ``download``."""
    if task not in TASK_DATASETS:
        raise ValueError(
            f"--download fetches the files of the task{'s' * (len(TASK_DATASETS) > 1)} "
            f"{', '.join(TASK_DATASETS)}; task {task!r} reads no published files (`spikestab tasks` says what it needs)"
        )
    name = TASK_DATASETS[task]
    if installed(name, data_dir):
        return False
    log(
        f"{task}: files not found; --download fetches the official {name.upper()} archives into "
        f"{dataset_folder(name, data_dir)} and checks them against their published checksums"
    )
    download(name, data_dir, progress=progress)
    return True


def dataset_folder(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where ``download(name, root)`` puts a dataset: ``<root or default_data_dir(name)>/<FOLDER>``."""
    spec = _spec(name)
    return (Path(root).expanduser() if root is not None else default_data_dir(name)) / spec.folder


def download(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch, check and unpack dataset ``name`` (a key of ``DATASETS``); returns its folder.

    Files already unpacked are left alone; an archive already in the folder (a finished download, or one
    put there by hand) is checked and unpacked without the network. Raises ValueError for bad arguments
    (before anything is written), ``ChecksumError`` for a file whose digest differs from the published one
    and ``DownloadError`` when the transfer fails (the message says where to put the files by hand)."""
    spec = _spec(name)
    return fetch_dataset(
        spec,
        dataset_folder(name, root),
        base_url=base_url,
        retries=retries,
        timeout=timeout,
        progress=progress,
        command=f"spikestab download {name}" + (f" --root {root}" if root is not None else ""),
    )


def fetch_dataset(
    spec: RemoteDataset,
    folder: str | os.PathLike,
    *,
    base_url: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    command: str = "the same download",
) -> Path:
    """``download`` for any ``RemoteDataset`` into ``folder`` (see the module docstring for the rules)."""
    folder = Path(folder)
    base = _check_arguments(folder, base_url, retries, timeout)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        for remote in spec.files:
            if (folder / remote.unpacks_to).exists():
                continue
            archive = folder / remote.name
            if not archive.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                url = base + remote.name if base else remote.url
                try:
                    _transfer(url, folder / (remote.name + ".part"), retries, timeout, progress)
                except DownloadError as err:
                    raise DownloadError(f"{err}\n{_by_hand(spec, folder, command)}") from None
                _accept(folder / (remote.name + ".part"), remote, archive)
            else:
                _verify(archive, remote, delete=False)
            _unpack(archive, folder, remote.unpacks_to)
    finally:
        for p in made:  # a failed first download leaves no empty folders behind
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return folder


def _spec(name: str) -> RemoteDataset:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name]


def _check_arguments(folder: Path, base_url: str | None, retries: int, timeout: float) -> str | None:
    """The base URL in use (argument, else ``$SPIKESTAB_DATA_URL``, else None: the official URLs), after
    refusing bad arguments."""
    if int(retries) != retries or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"root: {existing} is a file, not a folder")
    base = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or None
    if base is not None and not base.startswith(("http://", "https://", "file://")):
        raise ValueError(f"base_url must start with http://, https:// or file://, got {base!r}")
    return None if base is None else base.rstrip("/") + "/"


def _transfer(url: str, part: Path, retries: int, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part``, continuing what ``part`` already holds with a Range request, and
    again after a cut transfer (up to ``retries`` times)."""
    for attempt in range(retries + 1):
        try:
            _transfer_once(url, part, timeout, progress)
            return
        except _Interrupted:
            if attempt == retries:
                raise
            print(f"{part.name}: transfer cut at {part.stat().st_size} bytes; resuming", file=sys.stderr)


def _transfer_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "spikestab"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the partial file is already whole
            return
        raise DownloadError(f"{url}: the server answered {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not reach {url} ({reason})") from None
    with response:
        resumed = bool(have) and response.status == 206 and _range_start(response) == have
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, "ab" if resumed else "wb") as fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name[:-5],
                file=sys.stderr,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError):
                    break  # a cut connection: the size check below says so
                if not chunk:
                    break
                fh.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise _Interrupted(
            f"{url}: transfer cut after {part.stat().st_size} of {total} bytes (kept in {part}; run again to resume)"
        )


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """The first byte a 206 response holds (``Content-Range: bytes START-END/TOTAL``)."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def digests(path: Path, algorithms: list[str]) -> dict[str, str]:
    """The hex digests of a file under each algorithm, in one pass."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def _verify(path: Path, remote: Remote, delete: bool) -> None:
    """ChecksumError unless every published digest of ``remote`` matches ``path`` (deleted if ``delete``)."""
    got = digests(path, list(remote.checksums))
    wrong = {a: d for a, d in got.items() if d != remote.checksums[a]}
    if wrong:
        if delete:
            path.unlink()
        what = "; ".join(f"{a} {d}, published {remote.checksums[a]}" for a, d in wrong.items())
        fate = "deleted" if delete else "left in place: delete or replace it"
        raise ChecksumError(f"{remote.name}: checksum mismatch ({what}); the file was {fate}")


def _accept(part: Path, remote: Remote, archive: Path) -> None:
    """Check a finished download, then give it its final name (atomic rename)."""
    _verify(part, remote, delete=True)
    os.replace(part, archive)


def _unpack(archive: Path, folder: Path, unpacks_to: str) -> None:
    """Extract a zip archive into a temporary folder beside it, then rename its top-level entries into
    ``folder``; members with absolute paths or ``..`` are refused before anything is written."""
    tmp = folder / f".{archive.name}.unpack{os.getpid()}"
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                p = PurePosixPath(member)
                if p.is_absolute() or ".." in p.parts:
                    raise ValueError(f"{archive}: refusing the archive member {member!r} (outside the folder)")
            z.extractall(tmp)
        if not (tmp / unpacks_to).exists():
            raise ValueError(f"{archive}: the archive holds no {unpacks_to!r}")
        for entry in tmp.iterdir():
            target = folder / entry.name
            if not target.exists():
                os.replace(entry, target)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive}: not a readable zip archive ({err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _by_hand(spec: RemoteDataset, folder: Path, command: str) -> str:
    """What to do without the network: which files to fetch elsewhere and where to put them."""
    lines = [f"To install it by hand, download these files elsewhere (described at {spec.page}):"]
    for r in spec.files:
        lines.append(f"  {r.url}  -> {folder / r.name}  ({', '.join(f'{a} {d}' for a, d in r.checksums.items())})")
    lines.append(
        f"then run `{command}` again: it checks and unpacks them without the network "
        f"(or unpack them into {folder} yourself)."
    )
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    try:
        folder = download(
            args.dataset, args.root, base_url=args.base_url, retries=args.retries, progress=not args.no_progress
        )
    except DownloadError as err:
        print(f"spikestab download: error: {err}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: {', '.join(r.unpacks_to for r in DATASETS[args.dataset].files)} in {folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="fetch a real dataset (SHD, SSC, N-MNIST) into the data cache",
        description="Fetch the official archives of a real dataset into the data cache, check "
        "them against their published checksums (a file that differs is deleted), "
        "resume a cut transfer, and unpack them where `spikestab train --task shd` "
        "and tonic find them. Offline, the error says which files to put where.",
    )
    p.add_argument("dataset", choices=sorted(DATASETS), help="the dataset")
    p.add_argument(
        "--root",
        default=None,
        help="data folder (files go to ROOT/SHD, ROOT/SSC or ROOT/NMNIST; pass the same folder to "
        "`spikestab train --data-dir`); default $SPIKESTAB_DATA/<dataset>, "
        "i.e. ~/.cache/spikestab/data/<dataset>",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help=f"fetch <BASE_URL>/<archive name> instead of the official URLs (a mirror; default ${BASE_URL_ENV} if set)",
    )
    p.add_argument("--retries", type=int, default=3, help="resume a cut transfer this many times")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd)
