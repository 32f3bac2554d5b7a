"""Event-driven products for binary, sparse spike tensors on CPU.

Spikes are mostly zeros (inputs ~5%, hidden a few %), so ``x @ W^T`` only needs the weight columns
of the active inputs, and the weight gradient ``g^T x`` only the gradient rows of the active steps.
Two small C loops do exactly that (one pass over x, no index tensors, no temporaries):

    spmm_acc(x [R, N], wt [N, H], out [R, H]):  out[r] += x[r, c] * wt[c]   for every x[r, c] != 0
    spmm_t_acc(x [R, N], g [R, H], gwt [N, H]): gwt[c] += x[r, c] * g[r]    for every x[r, c] != 0

They are compiled with the system C compiler on first use (no torch headers, well under a second),
cached by source hash under ``$SPIKESTAB_CACHE`` (default ``~/.cache/spikestab``) and called through
ctypes on the tensors' memory. Without a compiler, or for non-CPU / non-float32 tensors, callers use
the dense torch products instead (``available()`` tells which).
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

import torch
from torch import Tensor

# Below this fraction of non-zero inputs the event-driven products beat the dense ones (measured in
# benchmarks/bench_layers.py: at 5% they take about a quarter of the dense time, at 30% about as long).
EVENT_DENSITY = 0.15

_SOURCE = r"""
#include <stdint.h>
#include <omp.h>

void spmm_acc(const float* restrict x, int64_t rows, int64_t n, const float* restrict wt, int64_t h,
              float* restrict out, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const float* restrict xr = x + r * n;
        float* restrict o = out + r * h;
        for (int64_t c = 0; c < n; ++c) {
            const float v = xr[c];
            if (v != 0.0f) {
                const float* restrict w = wt + c * h;
                for (int64_t k = 0; k < h; ++k) o[k] += v * w[k];
            }
        }
    }
}

void spmm_t_acc(const float* restrict x, int64_t rows, int64_t n, const float* restrict g, int64_t h,
                float* restrict gwt, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t chunk = (h + nt - 1) / nt;
        const int64_t k0 = id * chunk, k1 = k0 + chunk < h ? k0 + chunk : h;
        for (int64_t r = 0; r < rows; ++r) {
            const float* restrict xr = x + r * n;
            const float* restrict gr = g + r * h;
            for (int64_t c = 0; c < n; ++c) {
                const float v = xr[c];
                if (v != 0.0f) {
                    float* restrict o = gwt + c * h;
                    for (int64_t k = k0; k < k1; ++k) o[k] += v * gr[k];
                }
            }
        }
    }
}
"""

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("model name", "flags"))), "")
    except OSError:
        return platform.processor()


def _build() -> ctypes.CDLL | None:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    cache = os.environ.get("SPIKESTAB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "spikestab"))
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError:  # read-only home (some CI runners): build per process in the temp folder
        cache = tempfile.mkdtemp(prefix="spikestab-")
    # -march=native: the library is keyed by the CPU model too, so a shared cache never hands one
    # machine's build to another kind of CPU
    tag = hashlib.sha256((_SOURCE + cc + platform.machine() + _cpu_model()).encode()).hexdigest()[:16]
    path = os.path.join(cache, f"spikes_{tag}.so")
    if not os.path.exists(path):
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            src = os.path.join(tmp, "spikes.c")
            with open(src, "w") as f:
                f.write(_SOURCE)
            out = os.path.join(tmp, "spikes.so")
            cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", src, "-o", out]
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                return None
            os.replace(out, path)  # atomic: concurrent builders never see a partial library
    lib = ctypes.CDLL(path)
    args = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
    for fn in (lib.spmm_acc, lib.spmm_t_acc):
        fn.argtypes, fn.restype = args, None
    return lib


def _library() -> ctypes.CDLL | None:
    global _lib, _tried
    with _lock:
        if not _tried:
            _tried = True
            try:
                _lib = _build()
            except OSError:
                _lib = None
        return _lib


def available(*tensors: Tensor) -> bool:
    """True when the event-driven loops can run on these tensors (CPU float32, library built)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and _library() is not None


def density(x: Tensor) -> float:
    """Fraction of non-zero entries, estimated on a fixed strided sample of at most ~65k entries."""
    flat = x.reshape(-1)
    stride = max(1, flat.numel() // 65536)
    sample = flat[::stride]
    return sample.count_nonzero().item() / max(sample.numel(), 1)


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def spmm_acc(x: Tensor, wt: Tensor, out: Tensor) -> Tensor:
    """out [R, H] += x [R, N] @ wt [N, H], visiting only the non-zeros of x (all contiguous float32)."""
    rows, n = x.shape
    _library().spmm_acc(_ptr(x), rows, n, _ptr(wt), wt.shape[1], _ptr(out), torch.get_num_threads())
    return out


def spmm_t_acc(x: Tensor, g: Tensor, gwt: Tensor) -> Tensor:
    """gwt [N, H] += x [R, N]^T @ g [R, H], visiting only the non-zeros of x (all contiguous float32)."""
    rows, n = x.shape
    _library().spmm_t_acc(_ptr(x), rows, n, _ptr(g), g.shape[1], _ptr(gwt), torch.get_num_threads())
    return gwt


class _EventLinear(torch.autograd.Function):
    """x W^T + b for a sparse x: forward and weight gradient visit only the non-zeros of x."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        out = bias.expand(x2.shape[0], weight.shape[0]).contiguous()
        spmm_acc(x2, weight.t().contiguous(), out)
        ctx.save_for_backward(x2, weight)
        ctx.x_shape = x.shape
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, weight.shape[0]).contiguous()
        g_x = g_w = g_b = None
        if ctx.needs_input_grad[0]:
            g_x = (g2 @ weight).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            g_w = spmm_t_acc(x2, g2, weight.new_zeros(weight.shape[1], weight.shape[0])).t()
        if ctx.needs_input_grad[2]:
            g_b = g2.sum(0)
        return g_x, g_w, g_b


def event_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``torch.nn.functional.linear(x, weight, bias)`` computed from the non-zeros of x only."""
    return _EventLinear.apply(x, weight, bias)
