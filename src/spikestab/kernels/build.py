"""Build, cache and load the native kernels (the C files in ``spikestab/kernels/csrc``).

The sources ship as package data and are read with :mod:`importlib.resources`. The system C compiler
(``$CC``, else ``cc``, else ``gcc``) compiles them once into a shared library (about 3 s of CPU), cached
under ``$SPIKESTAB_CACHE`` (default ``~/.cache/spikestab``; a temporary folder when that is not
writable) as ``spikes_<tag>.so``, where the tag hashes the sources, the compiler, the flags and the CPU
model (``-march=native``: a shared cache never hands one machine's build to another kind of CPU).

Beside each library lies ``spikes_<tag>.so.sha256``, the SHA-256 of the library file written when it
was built. A cached library whose bytes do not match (truncated by a full disk, corrupted, or written
by an interrupted copy) is rebuilt, never loaded: loading a truncated ELF file can kill the process
with SIGBUS.

A build that fails warns once (:class:`NativeBuildWarning`) with the compiler's message and names the
fallback (the torch time loop of backend "fused"); :func:`library` then returns None for the rest of the
process, and :func:`failure` says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from importlib import resources

__all__ = [
    "CACHE_ENV",
    "FLAGS",
    "NativeBuildWarning",
    "cache_dir",
    "compiler",
    "failure",
    "library",
    "library_path",
    "sources",
]

CACHE_ENV = "SPIKESTAB_CACHE"
# -march=native: the tag includes the CPU model. -ffp-contract=off: no fused multiply-adds beyond the
# explicit ones, so the forward loop rounds like the torch loop (its spikes equal the reference's).
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC")
LIBS = ("-lm",)


class NativeBuildWarning(RuntimeWarning):
    """The native kernels could not be built or loaded; the torch loops run instead."""


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_failure: str | None = None


def sources() -> dict[str, str]:
    """The C sources and headers by file name (package data, read with importlib.resources)."""
    folder = resources.files("spikestab.kernels") / "csrc"
    return {
        f.name: f.read_text() for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith((".c", ".h"))
    }


def compiler() -> str | None:
    """The C compiler the build uses: ``$CC`` (default ``cc``), else ``gcc``; None when neither exists."""
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def cache_dir() -> str:
    """Where built libraries are cached: ``$SPIKESTAB_CACHE``, default ``~/.cache/spikestab``."""
    return os.environ.get(CACHE_ENV, os.path.join(os.path.expanduser("~"), ".cache", "spikestab"))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("model name", "flags"))), "")
    except OSError:
        return platform.processor()


def library_path(folder: str, cc: str, src: dict[str, str] | None = None) -> str:
    """The cached library's path in ``folder`` for compiler ``cc``: named by a hash of the sources, the
    compiler, the flags, the machine and the CPU model."""
    src = sources() if src is None else src
    key = "".join(f"{name}\0{text}\0" for name, text in src.items())
    key += cc + " ".join(FLAGS + LIBS) + platform.machine() + _cpu_model()
    return os.path.join(folder, f"spikes_{hashlib.sha256(key.encode()).hexdigest()[:16]}.so")


def _file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _intact(path: str) -> bool:
    """Whether ``path`` exists and its bytes hash to what its ``.sha256`` file recorded at build time."""
    try:
        with open(path + ".sha256") as f:
            expected = f.read().strip()
        return _file_hash(path) == expected
    except OSError:
        return False


def _compile(cc: str, src: dict[str, str], path: str) -> None:
    """Compile ``src`` into ``path`` (and its hash file), atomically: concurrent builders never see a
    partial file. Raises RuntimeError with the compiler's message when it fails."""
    folder = os.path.dirname(path)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for name, text in src.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        units = [name for name in src if name.endswith(".c")]
        # relative names, run in tmp: the library's bytes do not depend on the temporary folder's name
        proc = subprocess.run(
            [cc, *FLAGS, *units, "-o", "spikes.so", *LIBS], cwd=tmp, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{os.path.basename(cc)} exited with status {proc.returncode}:\n{(proc.stderr or proc.stdout).strip()}"
            )
        out = os.path.join(tmp, "spikes.so")
        with open(out + ".sha256", "w") as f:
            f.write(_file_hash(out))
        os.replace(out, path)
        os.replace(out + ".sha256", path + ".sha256")


def load(folder: str | None = None) -> ctypes.CDLL:
    """Build (unless an intact cached copy exists) and load the library from ``folder`` (default
    :func:`cache_dir`). Raises RuntimeError when there is no compiler or the build fails."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC, or install cc or gcc)")
    folder = cache_dir() if folder is None else folder
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:  # read-only home (some CI runners): build per process in the temporary folder
        folder = tempfile.mkdtemp(prefix="spikestab-")
    src = sources()
    path = library_path(folder, cc, src)
    if not _intact(path):
        _compile(cc, src, path)
    return ctypes.CDLL(path)


def library() -> ctypes.CDLL | None:
    """The loaded native library, built on first use; None (after one warning) when it cannot be built."""
    global _lib, _tried, _failure
    with _lock:
        if not _tried:
            _tried = True
            try:
                _lib = load()
            except (OSError, RuntimeError) as err:
                _failure = str(err)
                warnings.warn(
                    f"spikestab: the native kernels could not be built, so the torch time loop "
                    f"(backend 'fused') runs instead of the C loops (backend 'event'); {_failure}",
                    NativeBuildWarning,
                    stacklevel=3,
                )
        return _lib


def failure() -> str | None:
    """Why the native library is unavailable (the compiler's message), or None."""
    return _failure
