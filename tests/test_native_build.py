"""The native kernels' build: C sources as package files, warning-free, a cache that never loads a
damaged library, a failed build that warns once and names the fallback."""

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from spikestab.kernels import build, cabi

SRC = Path(__file__).resolve().parents[1] / "src" / "spikestab"


def _run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(SRC.parent), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_python_file_under_src_contains_c_source():
    markers = ("#include <", "__attribute__((", "#pragma omp")
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if any(m in p.read_text() for m in markers)]
    assert offenders == []
    assert {"spikestab.h", "lif.c", "products.c"} <= set(build.sources())


def test_c_sources_compile_without_warnings_under_wall_wextra(tmp_path):
    cc = build.compiler()
    assert cc is not None, "a C compiler is a CI requirement"
    for name, text in build.sources().items():
        (tmp_path / name).write_text(text)
    units = [n for n in build.sources() if n.endswith(".c")]
    proc = subprocess.run(
        [cc, *build.FLAGS, "-Wall", "-Wextra", *units, "-o", "lib.so", *build.LIBS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_struct_layouts_match_the_c_compiler():
    lib = cabi.library()
    assert lib is not None, build.failure()
    for which, struct in enumerate((cabi.Csr, cabi.ForwardArgs, cabi.BackwardArgs)):
        assert lib.spk_abi_size(which) == ctypes.sizeof(struct)


def test_truncated_cached_library_is_rebuilt_not_loaded(tmp_path):
    cc = build.compiler()
    built = build.library_path(build.cache_dir(), cc)
    assert cabi.library() is not None and os.path.exists(built)
    target = build.library_path(str(tmp_path), cc)
    shutil.copy(built, target)
    shutil.copy(built + ".sha256", target + ".sha256")
    size = os.path.getsize(target)
    with open(target, "r+b") as f:  # what a full disk or an interrupted copy leaves
        f.truncate(size // 3)
    proc = _run_python(
        """
        import torch
        from spikestab.kernels import sparse
        x = (torch.rand(50, 40) < 0.1).float(); w = torch.randn(40, 30)
        assert torch.allclose(sparse.sparse_mm(sparse.nonzeros(x), w), x @ w, atol=1e-5)
        print("ok")
    """,
        {build.CACHE_ENV: str(tmp_path)},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])
    assert os.path.getsize(target) == size  # rebuilt in full
    with open(target, "rb") as f, open(target + ".sha256") as h:
        import hashlib

        assert hashlib.sha256(f.read()).hexdigest() == h.read().strip()


def test_failed_build_warns_once_names_the_fallback_and_explicit_event_raises(tmp_path):
    fake = tmp_path / "fake-cc"
    fake.write_text("#!/bin/sh\necho 'spikes.c:1: error: the fake compiler refuses' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = _run_python(
        """
        import warnings
        import torch
        from spikestab import LIF
        from spikestab.kernels import build
        torch.manual_seed(0)
        x = (torch.rand(20, 2, 5) < 0.3).float()
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            auto = LIF(5, 8, backend="auto")
            z_auto = auto(x)[0]
            z_again = auto(x)[0]
        ref = LIF(5, 8, backend="reference"); ref.load_state_dict(auto.state_dict())
        assert torch.equal(z_auto, ref(x)[0]) and torch.equal(z_again, z_auto)
        msgs = [str(w.message) for w in got if issubclass(w.category, build.NativeBuildWarning)]
        assert len(msgs) == 1, msgs
        assert "the fake compiler refuses" in msgs[0] and "'fused'" in msgs[0], msgs[0]
        event = LIF(5, 8, backend="native")
        try:
            event(x)
        except RuntimeError as err:
            assert "backend 'native' cannot run here" in str(err) and "fake compiler" in str(err), err
        else:
            raise AssertionError("an explicit 'native' backend without the library must raise")
        print("ok")
    """,
        {"CC": str(fake), build.CACHE_ENV: str(tmp_path / "cache")},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_failed_allocation_in_c_raises_memory_error():
    """Every malloc of the C code is checked: under an address-space limit the 5 GB scratch panel of
    the weight-gradient product cannot be allocated, and the call raises instead of writing through
    NULL."""
    proc = _run_python(
        """
        import resource
        import torch
        from spikestab.kernels import cabi, sparse
        assert cabi.library() is not None
        n = 20_000_000  # output [n, 1]: 80 MB; the C scratch panel [n, 64]: 5.1 GB
        nz = sparse.NonZeros(torch.zeros(2, dtype=torch.int64), torch.empty(0, dtype=torch.int32), torch.empty(0),
                             (1, n))
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
        limit = vm + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            sparse.sparse_mm_t(nz, torch.ones(1, 1))
        except MemoryError as err:
            print("raised", err)
    """,
        {},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("raised spk_csr_mm_t"), proc.stdout


def test_c_enums_follow_the_python_vocabularies():
    """enum spk_reset follows dynamics.RESETS and enum spk_surrogate follows event.SURROGATE_CODES."""
    import re

    from spikestab.dynamics import RESETS
    from spikestab.kernels.native import RESET_CODES, SURROGATE_CODES

    header = build.sources()["spikestab.h"]

    def enum(name: str) -> dict[str, int]:
        body = re.search(r"enum " + name + r" \{([^}]*)\}", header).group(1)
        return {k.lower().replace("_", "-"): int(v) for k, v in re.findall(r"SPK_(?:SG_)?(\w+) = (-?\d+)", body)}

    assert enum("spk_reset") == {r.replace("_", "-"): i for i, r in enumerate(RESETS)}
    assert RESET_CODES == {r: i for i, r in enumerate(RESETS)}
    assert {k: v for k, v in enum("spk_surrogate").items() if v >= 0} == SURROGATE_CODES


MARKER_SOURCE = """
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(getenv("PLANTED_MARKER"), "w");
    if (f) { fputs("ran", f); fclose(f); }
}
"""


def _plant_library(folder: Path) -> Path:
    """A library with a load-time constructor (it writes $PLANTED_MARKER) under the name the cache looks
    up in ``folder``, with a matching .sha256: what someone who can write to a shared cache leaves."""
    import hashlib

    cc = build.compiler()
    (folder / "planted.c").write_text(MARKER_SOURCE)
    target = Path(build.library_path(str(folder), cc))
    subprocess.run([cc, "-shared", "-fPIC", "planted.c", "-o", target.name], cwd=folder, check=True)
    (folder / "planted.c").unlink()
    target.with_name(target.name + ".sha256").write_text(hashlib.sha256(target.read_bytes()).hexdigest())
    return target


def _load_in_child(cache: Path, marker: Path) -> subprocess.CompletedProcess:
    return _run_python(
        """
        import warnings
        warnings.simplefilter("always")
        from spikestab.kernels import cabi
        assert cabi.library() is not None
        print("ok")
        """,
        {build.CACHE_ENV: str(cache), "PLANTED_MARKER": str(marker)},
    )


def test_a_cache_folder_others_can_write_is_not_loaded_from(tmp_path):
    cache = tmp_path / "shared"
    cache.mkdir()
    planted = _plant_library(cache)
    planted.chmod(0o755)
    cache.chmod(0o777)  # a shared cache anyone can write to
    marker = tmp_path / "marker"
    proc = _load_in_child(cache, marker)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert not marker.exists(), "the planted library ran"
    assert "UntrustedCacheWarning" in proc.stderr and f"chmod go-w {cache}" in proc.stderr, proc.stderr
    assert "writable by group" in proc.stderr, proc.stderr


def test_a_cached_library_others_can_write_is_rebuilt_not_loaded(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    cache.chmod(0o700)
    planted = _plant_library(cache)
    planted.chmod(0o757)  # the folder is private, the library file is writable by others
    marker = tmp_path / "marker"
    proc = _load_in_child(cache, marker)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert not marker.exists(), "the planted library ran"
    assert "not loading the cached library" in proc.stderr and "writable by others" in proc.stderr, proc.stderr
    assert build.untrusted(str(planted)) is None  # rebuilt in place, mode 0755
    assert oct(planted.stat().st_mode & 0o777) == "0o755"


def test_a_library_or_folder_of_another_user_is_untrusted(tmp_path):
    """Ownership is compared with the given user id (a real second user needs root to set up)."""
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"\x7fELF")
    lib.chmod(0o755)
    me = os.getuid()
    assert build.untrusted(str(lib), uid=me) is None
    assert build.untrusted(str(tmp_path), uid=me) is None
    for path in (lib, tmp_path):
        problem = build.untrusted(str(path), uid=me + 1)
        assert problem == f"{path} belongs to user id {me}, not to the current user ({me + 1})"
    lib.chmod(0o775)
    assert build.untrusted(str(lib), uid=me) == f"{lib} is writable by group (mode 775)"
