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

The cache is trusted only as far as its owner: a library is loaded only from a cache folder that
belongs to the current user and that neither group nor others can write, and only when the library
file itself belongs to the user and is not writable by group or others (the rule ssh applies to its
keys). Anyone who could write there could otherwise run code in every process that loads the kernels.
A folder that fails the check is not used: a warning (:class:`UntrustedCacheWarning`) names it, says
how to fix it (``chmod go-w``, or a ``$SPIKESTAB_CACHE`` of one's own) and the library is built into a
private temporary folder for this process. A library file that fails the check in a trusted folder is
rebuilt in place. Libraries this module builds are written with mode 0755, their folder with 0700.

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
import stat
import subprocess
import tempfile
import threading
import warnings
from importlib import resources

__all__ = [
    "CACHE_ENV",
    "FLAGS",
    "NativeBuildWarning",
    "UntrustedCacheWarning",
    "cache_dir",
    "compiler",
    "failure",
    "library",
    "library_path",
    "sources",
    "untrusted",
]

CACHE_ENV = "SPIKESTAB_CACHE"
# -march=native: the tag includes the CPU model. -ffp-contract=off: no fused multiply-adds beyond the
# explicit ones, so the forward loop rounds like the torch loop (its spikes equal the reference's).
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC")
LIBS = ("-lm",)


class NativeBuildWarning(RuntimeWarning):
    """The native kernels could not be built or loaded; the torch loops run instead."""


class UntrustedCacheWarning(RuntimeWarning):
    """A cached library or its folder could be written by someone else and is not loaded."""


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


def untrusted(path: str, uid: int | None = None) -> str | None:
    """Why ``path`` (the cache folder or a library in it) cannot be trusted, or None when it belongs to
    user ``uid`` (default: the current user) and neither group nor others can write it."""
    uid = os.getuid() if uid is None else uid
    st = os.stat(path)
    if st.st_uid != uid:
        return f"{path} belongs to user id {st.st_uid}, not to the current user ({uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "group" if st.st_mode & stat.S_IWGRP else "others"
        return f"{path} is writable by {who} (mode {st.st_mode & 0o777:o})"
    return None


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
        os.chmod(out, 0o755)  # whatever the umask: a library others can write would not be trusted
        with open(out + ".sha256", "w") as f:
            f.write(_file_hash(out))
        os.chmod(out + ".sha256", 0o644)
        os.replace(out, path)
        os.replace(out + ".sha256", path + ".sha256")


def load(folder: str | None = None) -> ctypes.CDLL:
    """Build (unless an intact cached copy exists) and load the library from ``folder`` (default
    :func:`cache_dir`). Raises RuntimeError when there is no compiler or the build fails."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC, or install cc or gcc)")
    folder = _trusted_folder(cache_dir() if folder is None else folder)
    src = sources()
    path = library_path(folder, cc, src)
    if not (_intact(path) and _trusted_library(path)):
        _compile(cc, src, path)
    return ctypes.CDLL(path)


def _trusted_folder(folder: str) -> str:
    """``folder``, created private when missing; a private temporary folder instead when it cannot be
    created (read-only home, some CI runners) or when others could write to it (with a warning)."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return tempfile.mkdtemp(prefix="spikestab-")
    problem = untrusted(folder)
    if problem is None:
        return folder
    warnings.warn(
        f"spikestab: not using the kernel cache: {problem}; anyone who can write there could run code in "
        f"this process. Fix it with `chmod go-w {folder}` (as its owner) or set ${CACHE_ENV} to a folder of "
        f"your own; the kernels are built into a private temporary folder for now",
        UntrustedCacheWarning,
        stacklevel=4,
    )
    return tempfile.mkdtemp(prefix="spikestab-")


def _trusted_library(path: str) -> bool:
    """Whether the cached library ``path`` may be loaded; warns (and it is rebuilt) when others could
    have written it."""
    problem = untrusted(path)
    if problem is not None:
        warnings.warn(
            f"spikestab: not loading the cached library: {problem}; it is rebuilt",
            UntrustedCacheWarning,
            stacklevel=4,
        )
    return problem is None


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
                    f"(backend 'fused') runs instead of the C loops (backend 'native'); {_failure}",
                    NativeBuildWarning,
                    stacklevel=3,
                )
        return _lib


def failure() -> str | None:
    """Why the native library is unavailable (the compiler's message), or None."""
    return _failure
