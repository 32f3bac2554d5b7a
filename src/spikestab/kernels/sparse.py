"""Native C loops for spiking layers on CPU: event-driven products and whole LIF/ALIF time loops.

Spikes are binary and mostly zeros (inputs ~5%, hidden a few %), so ``x @ W^T`` only needs the weight
rows of the active inputs, and the weight gradient ``g^T x`` only the gradient rows of the active
entries. The C source below does that from a compressed-row index of the non-zeros (``nonzeros``):
``sparse_mm`` (register-blocked, a column panel of the weights kept in cache) and ``sparse_mm_t``.

It also runs the whole forward and backward time loops of a LIF/ALIF layer in one call each
(``sequence_forward`` / ``sequence_backward``, used by ``kernels.fused.run_event``): batch rows are
independent, so each thread runs whole sequences of a tile of rows without any per-step
synchronisation or Python dispatch. The recurrent products (forward z W_hh^T, backward gI W_hh) visit
only non-zero columns: per-row gathers of weight rows when few are active, a 6 x 16 register tile
(at the FMA peak) otherwise, chosen per tile and step. The forward performs the torch loop's
floating-point operations in the same order (compiled with ``-ffp-contract=off``; sums over spikes
from zero in column order, then the input current added), so its spikes equal the reference's. The
backward evaluates the rational surrogate-gradient shapes itself (``SURROGATE_CODES``).

Compiled with the system C compiler on first use (no torch headers; about 3 s of CPU), cached by
source hash, flags and CPU model under ``$SPIKESTAB_CACHE`` (default ``~/.cache/spikestab``) and called
through ctypes on the tensors' memory, OpenMP over ``torch.get_num_threads()`` threads (the OpenMP
runtime torch loaded). Without a compiler, or for non-CPU / non-float32 tensors, callers use the torch
code instead (``available()`` tells which).
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
from typing import NamedTuple

import torch
from torch import Tensor

# Below this fraction of non-zero inputs the event-driven input projection beats the dense one.
# Measured for [8000, 700] x [700, 256] on 1 thread, CPU ms of (index + product) + (index + weight
# gradient), event vs dense: 2%: 16 vs 83, 5%: 26 vs 79, 10%: 53 vs 96, 15%: 76 vs 81, 20%: 117 vs 96
# (docs/results/kernels.md, "Event-driven path, v2").
EVENT_DENSITY = 0.15
# The same for the recurrent weight gradient from the hidden spikes ([8000, 256]^T x [8000, 256]),
# event vs dense CPU ms: 5%: 6.9 vs 14.2, 10%: 7.2 vs 14.0, 20%: 12.4 vs 14.4, 30%: 17.2 vs 17.0,
# 50%: 28.6 vs 14.0.
HIDDEN_EVENT_DENSITY = 0.2

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <omp.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

/* 8-float vectors (AVX on x86, split by the compiler elsewhere); unaligned loads/stores via memcpy. */
typedef float v8 __attribute__((vector_size(32)));

static inline v8 vld(const float* p) { v8 v; memcpy(&v, p, sizeof v); return v; }
static inline void vst(float* p, v8 v) { memcpy(p, &v, sizeof v); }
static inline v8 vset(float x) { return (v8){x, x, x, x, x, x, x, x}; }
static inline v8 vfma(v8 a, v8 b, v8 c) {  /* a*b + c; for a in {0, 1} equal to the unfused form */
#if defined(__FMA__)
    return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}

#define RMAX 6   /* batch rows per register tile */
#define NR 16    /* output columns per register tile (two vectors) */

/* b [K,N] (row-major) packed as ceil(N/width) panels [K, width], zero-padded: products then read each
   panel sequentially (no cache-set conflicts from a long row stride) and need no column tail.
   Returns a malloc'ed buffer. */
static float* pack(const float* b, int64_t K, int64_t N, int64_t width) {
    const int64_t panels = (N + width - 1) / width;
    float* bp = malloc(sizeof(float) * (size_t)(panels * K * width));
    for (int64_t p = 0; p < panels; ++p)
        for (int64_t k = 0; k < K; ++k)
            for (int64_t c = 0; c < width; ++c) {
                const int64_t col = p * width + c;
                bp[(p * K + k) * width + c] = col < N ? b[k * N + col] : 0.0f;
            }
    return bp;
}

/* out[r, :n] = sum_j a[r, idx[j]] * b[idx[j], :n] for r < R, with b packed by ``pack`` (K rows): the
   listed rows of b accumulated from zero in list order, R x NR accumulators held in registers. */
static inline __attribute__((always_inline)) void tile_mm(const int R, const float* a, int64_t lda,
        const int32_t* idx, int64_t nk, const float* bp, int64_t K, int64_t n, float* out, int64_t ldo) {
    for (int64_t c0 = 0; c0 < n; c0 += NR) {
        const float* panel = bp + (c0 / NR) * K * NR;
        v8 acc[RMAX][2];
        for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = vset(0.0f);
        for (int64_t j = 0; j < nk; ++j) {
            const int64_t k = idx[j];
            const v8 b0 = vld(panel + k * NR), b1 = vld(panel + k * NR + 8);
            for (int r = 0; r < R; ++r) {
                const v8 ar = vset(a[r * lda + k]);
                acc[r][0] = vfma(ar, b0, acc[r][0]);
                acc[r][1] = vfma(ar, b1, acc[r][1]);
            }
        }
        if (c0 + NR <= n) {
            for (int r = 0; r < R; ++r) {
                vst(out + r * ldo + c0, acc[r][0]);
                vst(out + r * ldo + c0 + 8, acc[r][1]);
            }
        } else {
            float tmp[NR];
            for (int r = 0; r < R; ++r) {
                vst(tmp, acc[r][0]);
                vst(tmp + 8, acc[r][1]);
                for (int64_t c = 0; c < n - c0; ++c) out[r * ldo + c0 + c] = tmp[c];
            }
        }
    }
}

static void rows_mm(int R, const float* a, int64_t lda, const int32_t* idx, int64_t nk, const float* bp,
                    int64_t K, int64_t n, float* out, int64_t ldo) {
    switch (R) {
        case 1: tile_mm(1, a, lda, idx, nk, bp, K, n, out, ldo); break;
        case 2: tile_mm(2, a, lda, idx, nk, bp, K, n, out, ldo); break;
        case 3: tile_mm(3, a, lda, idx, nk, bp, K, n, out, ldo); break;
        case 4: tile_mm(4, a, lda, idx, nk, bp, K, n, out, ldo); break;
        case 5: tile_mm(5, a, lda, idx, nk, bp, K, n, out, ldo); break;
        default: tile_mm(6, a, lda, idx, nk, bp, K, n, out, ldo); break;
    }
}

/* Bit q set where p[q] != 0, q < 8. */
static inline unsigned nonzero_mask(const float* p) {
#if defined(__AVX__)
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p), _mm256_setzero_ps(), _CMP_NEQ_UQ));
#else
    unsigned m = 0;
    for (int q = 0; q < 8; ++q) m |= (unsigned)(p[q] != 0.0f) << q;
    return m;
#endif
}

/* Columns k < n with a[k] != 0, increasing, into idx; returns their count. */
static int64_t row_nonzeros(const float* a, int64_t n, int32_t* idx) {
    int64_t nk = 0, k = 0;
    for (; k + 8 <= n; k += 8)
        for (unsigned m = nonzero_mask(a + k); m; m &= m - 1) idx[nk++] = (int32_t)(k + __builtin_ctz(m));
    for (; k < n; ++k)
        if (a[k] != 0.0f) idx[nk++] = (int32_t)k;
    return nk;
}

/* out[:n] = sum_j a[idx[j]] * b[idx[j], :n] (b row-major, row stride n), from zero in list order:
   the event-driven product of one row, 64 columns of accumulators in registers at a time. */
static void gather_row(const float* a, const int32_t* idx, int64_t nk, const float* b, int64_t n, float* out) {
    int64_t c0 = 0;
    for (; c0 + 64 <= n; c0 += 64) {
        v8 acc[8];
        for (int q = 0; q < 8; ++q) acc[q] = vset(0.0f);
        for (int64_t j = 0; j < nk; ++j) {
            const v8 av = vset(a[idx[j]]);
            const float* br = b + idx[j] * n + c0;
            for (int q = 0; q < 8; ++q) acc[q] = vfma(av, vld(br + 8 * q), acc[q]);
        }
        for (int q = 0; q < 8; ++q) vst(out + c0 + 8 * q, acc[q]);
    }
    for (; c0 + 8 <= n; c0 += 8) {
        v8 acc = vset(0.0f);
        for (int64_t j = 0; j < nk; ++j) acc = vfma(vset(a[idx[j]]), vld(b + idx[j] * n + c0), acc);
        vst(out + c0, acc);
    }
    for (; c0 < n; ++c0) {
        float s = 0.0f;
        for (int64_t j = 0; j < nk; ++j) s += a[idx[j]] * b[idx[j] * n + c0];
        out[c0] = s;
    }
}

/* out [R, n] = a [R, K] (row stride lda) @ b [K, n], visiting only non-zeros of a: row by row from
   each row's non-zeros (gather_row, load-bound), or as one register tile over the columns non-zero
   in some row (tile_mm on the packed bp, compute-bound, R rows share each load), whichever does less
   work for this a: the tile costs about R/2 row visits per listed column. Both sum every output from
   zero in increasing k, so for spikes (entries 0 or 1) the choice never changes the result.
   scratch: 3 * K ints. */
static void sparse_rows_mm(int R, const float* a, int64_t lda, int64_t K, const float* b, const float* bp,
                           int64_t n, float* out, int64_t ldo, int32_t* scratch) {
    int32_t* restrict flags = scratch + K;
    int32_t* restrict uni = flags + K;
    int64_t total = 0;
    for (int r = 0; r < R; ++r) {
        const float* ar = a + r * lda;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) total += __builtin_popcount(nonzero_mask(ar + k));
        for (; k < K; ++k) total += ar[k] != 0.0f;
    }
    for (int64_t k = 0; k < K; ++k) flags[k] = a[k] != 0.0f;
    for (int r = 1; r < R; ++r)
        for (int64_t k = 0; k < K; ++k) flags[k] |= a[r * lda + k] != 0.0f;
    int64_t nk = 0;
    for (int64_t k = 0; k < K; ++k) {
        uni[nk] = (int32_t)k;
        nk += flags[k];
    }
    if (2 * total < R * nk) {
        for (int r = 0; r < R; ++r) gather_row(a + r * lda, scratch, row_nonzeros(a + r * lda, K, scratch), b, n, out + r * ldo);
    } else {
        rows_mm(R, a, lda, uni, nk, bp, K, n, out, ldo);
    }
}

/* The tiles of batch rows a thread runs: its share [B*id/nt, B*(id+1)/nt) cut into near-equal
   tiles of at most RMAX rows, so that threads get equal work. Tile i is [tile_start(i), tile_start(i+1)). */
typedef struct { int64_t r0, m, tiles; } share_t;
static share_t thread_share(int64_t B) {
    const int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
    share_t s = {B * id / nt, B * (id + 1) / nt - B * id / nt, 0};
    s.tiles = (s.m + RMAX - 1) / RMAX;
    return s;
}
static int64_t tile_start(share_t s, int64_t i) { return s.r0 + s.m * i / s.tiles; }

enum { SUBTRACT = 0, MULTIPLICATIVE = 1, MULTIPLICATIVE_ALL = 2, NONE = 3 };
enum { SG_GIVEN = -1, SG_FAST_SIGMOID = 0, SG_TRIANGULAR = 1, SG_RECTANGULAR = 2 };

/* sg[k] = damp * f(sharp * (v[k] - thr[k])) for the rational shapes of spikestab.surrogate (the others
   are evaluated in torch beforehand: SG_GIVEN). */
static void surrogate(int64_t H, int shape, float damp, float sharp, const float* restrict v,
                      const float* restrict thr, float* restrict sg) {
    switch (shape) {
        case SG_FAST_SIGMOID:
            for (int64_t k = 0; k < H; ++k) {
                const float d = 1.0f + 2.0f * fabsf(sharp * (v[k] - thr[k]));
                sg[k] = damp * (1.0f / (d * d));
            }
            break;
        case SG_TRIANGULAR:
            for (int64_t k = 0; k < H; ++k) {
                const float f = 1.0f - fabsf(sharp * (v[k] - thr[k]));
                sg[k] = damp * (f > 0.0f ? f : 0.0f);
            }
            break;
        case SG_RECTANGULAR:
            for (int64_t k = 0; k < H; ++k) sg[k] = damp * (2.0f * fabsf(sharp * (v[k] - thr[k])) < 1.0f ? 1.0f : 0.0f);
            break;
        default:
            break;
    }
}

/* One step of one batch row (H neurons): rec = W_hh z_{t-1} (NULL: feed-forward), a/thr only for
   ALIF (thr receives the threshold A_t), pre_reset may be NULL. Returns the number of spikes. Simple passes over the row that the
   compiler vectorises; each performs the torch loop's operations in its order. */
static int64_t step_forward(int64_t H, const float* restrict cur, float* restrict rec, const float* restrict z,
                         const float* restrict vp, const float* restrict alpha, const float* restrict thr0,
                         const float* restrict rho, const float* restrict beta, float* restrict a, int reset,
                         float* restrict v, float* restrict s, float* restrict thr, float* restrict pre) {
    const float* restrict i = cur;
    if (rec) {
        for (int64_t k = 0; k < H; ++k) rec[k] = rec[k] + cur[k];
        i = rec;
    }
    const float* restrict th = thr0;
    if (a) {
        for (int64_t k = 0; k < H; ++k) {
            a[k] = rho[k] * a[k] + (1.0f - rho[k]) * z[k];
            thr[k] = thr0[k] + beta[k] * a[k];
        }
        th = thr;
    }
    switch (reset) {
        case SUBTRACT:
            for (int64_t k = 0; k < H; ++k) v[k] = (alpha[k] * vp[k] + i[k]) - z[k] * th[k];
            break;
        case MULTIPLICATIVE:
            for (int64_t k = 0; k < H; ++k) v[k] = alpha[k] * vp[k] * (1.0f - z[k]) + i[k];
            break;
        case MULTIPLICATIVE_ALL:
            if (pre) {
                for (int64_t k = 0; k < H; ++k) {
                    pre[k] = alpha[k] * vp[k] + i[k];
                    v[k] = pre[k] * (1.0f - z[k]);
                }
            } else {
                for (int64_t k = 0; k < H; ++k) v[k] = (alpha[k] * vp[k] + i[k]) * (1.0f - z[k]);
            }
            break;
        default:
            for (int64_t k = 0; k < H; ++k) v[k] = alpha[k] * vp[k] + i[k];
    }
    int64_t n = 0;
    for (int64_t k = 0; k < H; ++k) {
        s[k] = v[k] > th[k] ? 1.0f : 0.0f;
        n += v[k] > th[k];
    }
    return n;
}

/* The whole forward time loop of a LIF/ALIF layer (equations in neurons/functional.py, same
   floating-point operations in the same order as the torch loop). Batch rows are independent, so
   each thread runs whole sequences of its row tiles: no synchronisation between steps.
   cur [T,B,H]; wt = W_hh^T [H,H] or NULL; rho/beta NULL for LIF; thresholds/pre_reset/a_out may
   be NULL. Returns the number of spikes before the last step (for the recurrent weight gradient). */
int64_t lif_forward(const float* cur, int64_t T, int64_t B, int64_t H, const float* wt, const float* alpha,
                 const float* thr0, const float* rho, const float* beta, const float* v0, const float* z0,
                 const float* a0, int reset, float* volts, float* spikes, float* thresholds,
                 float* pre_reset, float* a_out, int threads) {
    float* wtp = wt ? pack(wt, H, H, NR) : NULL;
    int64_t spikes_before_last = 0;
    #pragma omp parallel num_threads(threads)
    {
        int64_t count = 0;
        const share_t share = thread_share(B);
        for (int64_t tile = 0; tile < share.tiles; ++tile) {
            const int64_t b0 = tile_start(share, tile);
            const int rows = (int)(tile_start(share, tile + 1) - b0);
            float* rec = malloc(sizeof(float) * (size_t)(rows * H));
            float* thr = malloc(sizeof(float) * (size_t)H);
            int32_t* idx = malloc(sizeof(int32_t) * (size_t)(3 * H));
            float* a = rho ? a_out + b0 * H : NULL;
            if (a) memcpy(a, a0 + b0 * H, sizeof(float) * (size_t)(rows * H));
            for (int64_t t = 0; t < T; ++t) {
                const int64_t off = (t * B + b0) * H, prev = ((t - 1) * B + b0) * H;
                const float* zp = t ? spikes + prev : z0 + b0 * H;
                const float* vp = t ? volts + prev : v0 + b0 * H;
                if (wt) sparse_rows_mm(rows, zp, H, H, wt, wtp, H, rec, H, idx);
                for (int r = 0; r < rows; ++r) {
                    const int64_t o = off + r * H;
                    const int64_t n = step_forward(H, cur + o, wt ? rec + r * H : NULL, zp + r * H, vp + r * H, alpha, thr0, rho, beta,
                                 a ? a + r * H : NULL, reset, volts + o, spikes + o,
                                 thresholds ? thresholds + o : thr, pre_reset ? pre_reset + o : NULL);
                    if (t + 1 < T) count += n;
                }
            }
            free(rec); free(thr); free(idx);
        }
        #pragma omp atomic
        spikes_before_last += count;
    }
    free(wtp);
    return spikes_before_last;
}

/* One reverse step of one batch row (H neurons). At entry gi holds the surrogate gradient, gz the
   gradient of z_t, gvn that of v_t through step t + 1 (and gan that of a_t, ALIF); at exit gi holds the
   gradient of the input current I_t, gvn that of v_{t-1}, gan that of a_{t-1} and gzp the gradient of
   z_{t-1} other than through W_hh. ga_thr: scratch for the gradient of the threshold A_t. Optional
   (NULL): gan, pre, g_volts, g_spikes_prev, g_alpha, g_thr. */
static void step_backward(int64_t H, float* restrict gi, const float* restrict gz, float* restrict gvn,
                          float* restrict gan, float* restrict gzp, float* restrict ga_thr, const float* restrict zp,
                          const float* restrict vp, const float* restrict thr, const float* restrict pre,
                          const float* restrict g_volts, const float* restrict g_spikes_prev,
                          const float* restrict alpha, const float* restrict rho, const float* restrict beta,
                          float* restrict g_alpha, float* restrict g_thr, int reset, int grad_reset) {
    for (int64_t k = 0; k < H; ++k) {  /* gi <- gradient of v_t */
        ga_thr[k] = -(gz[k] * gi[k]);
        gi[k] = gvn[k] + gz[k] * gi[k];
        gzp[k] = 0.0f;
    }
    if (g_volts) for (int64_t k = 0; k < H; ++k) gi[k] += g_volts[k];
    switch (reset) {
        case MULTIPLICATIVE_ALL:
            if (grad_reset) for (int64_t k = 0; k < H; ++k) gzp[k] = -gi[k] * pre[k];
            for (int64_t k = 0; k < H; ++k) {
                gi[k] = gi[k] * (1.0f - zp[k]);
                gvn[k] = gi[k] * alpha[k];
            }
            break;
        case MULTIPLICATIVE:
            for (int64_t k = 0; k < H; ++k) gvn[k] = gi[k] * alpha[k] * (1.0f - zp[k]);
            if (grad_reset) for (int64_t k = 0; k < H; ++k) gzp[k] = -gi[k] * alpha[k] * vp[k];
            break;
        case SUBTRACT:
            for (int64_t k = 0; k < H; ++k) gvn[k] = gi[k] * alpha[k];
            if (grad_reset)
                for (int64_t k = 0; k < H; ++k) {
                    ga_thr[k] -= gi[k] * zp[k];
                    gzp[k] = -gi[k] * thr[k];
                }
            break;
        default:
            for (int64_t k = 0; k < H; ++k) gvn[k] = gi[k] * alpha[k];
    }
    if (g_alpha) {
        if (reset == MULTIPLICATIVE) for (int64_t k = 0; k < H; ++k) g_alpha[k] += gi[k] * vp[k] * (1.0f - zp[k]);
        else for (int64_t k = 0; k < H; ++k) g_alpha[k] += gi[k] * vp[k];
    }
    if (g_thr) for (int64_t k = 0; k < H; ++k) g_thr[k] += ga_thr[k];
    if (gan)
        for (int64_t k = 0; k < H; ++k) {
            const float ga = gan[k] + beta[k] * ga_thr[k];
            gan[k] = rho[k] * ga;
            gzp[k] += (1.0f - rho[k]) * ga;
        }
    if (g_spikes_prev) for (int64_t k = 0; k < H; ++k) gzp[k] += g_spikes_prev[k];
}

/* The whole backward time loop (the reverse of lif_forward, see fused.py for the equations).
   work [T,B,H] receives the gradient of the input current; at entry it holds the surrogate gradient
   when sg_shape is SG_GIVEN, else the surrogate gradient is evaluated here, row by row.
   The adjoint product gi_t W_hh visits only the columns where some row of the tile has gi != 0.
   Optional (NULL) inputs: w, rho/beta (LIF), thresholds, pre_reset, g_spikes, g_volts, g_vT, g_zT,
   g_aT; optional outputs: g_alpha, g_thr, g_a0 ([B,H] each). */
void lif_backward(int64_t T, int64_t B, int64_t H, const float* w, const float* alpha, const float* thr0,
                  const float* rho, const float* beta, const float* volts, const float* spikes,
                  const float* thresholds, const float* pre_reset, const float* v0, const float* z0,
                  const float* g_spikes, const float* g_volts, const float* g_vT, const float* g_zT,
                  const float* g_aT, float* work, float* g_alpha, float* g_thr, float* g_v0, float* g_z0,
                  float* g_a0, int reset, int grad_reset, int sg_shape, float sg_damp, float sg_sharp,
                  int threads) {
    float* wp = w ? pack(w, H, H, NR) : NULL;
    #pragma omp parallel num_threads(threads)
    {
        const share_t share = thread_share(B);
        for (int64_t tile = 0; tile < share.tiles; ++tile) {
            const int64_t b0 = tile_start(share, tile);
            const int rows = (int)(tile_start(share, tile + 1) - b0);
            const size_t n = (size_t)(rows * H);
            float* gz = g_z0 + b0 * H;   /* gradient of z_t, then of z_{t-1} */
            float* gvn = g_v0 + b0 * H;  /* gradient of v_t through step t + 1 */
            float* gan = rho ? g_a0 + b0 * H : NULL;
            float* gzp = malloc(sizeof(float) * n);
            float* gthr = malloc(sizeof(float) * (size_t)H);
            int32_t* idx = malloc(sizeof(int32_t) * (size_t)(3 * H));
            const int64_t last = ((T - 1) * B + b0) * H;
            for (size_t j = 0; j < n; ++j) {
                gvn[j] = g_vT ? g_vT[b0 * H + j] : 0.0f;
                gz[j] = (g_zT ? g_zT[b0 * H + j] : 0.0f) + (g_spikes ? g_spikes[last + j] : 0.0f);
                if (gan) gan[j] = g_aT ? g_aT[b0 * H + j] : 0.0f;
                if (g_alpha) g_alpha[b0 * H + j] = 0.0f;
                if (g_thr) g_thr[b0 * H + j] = 0.0f;
            }
            for (int64_t t = T - 1; t >= 0; --t) {
                const int64_t off = (t * B + b0) * H, prev = ((t - 1) * B + b0) * H;
                const float* zp = t ? spikes + prev : z0 + b0 * H;
                const float* vp = t ? volts + prev : v0 + b0 * H;
                float* gi = work + off;
                for (int r = 0; r < rows; ++r) {
                    const int64_t o = off + r * H, q = b0 * H + r * H;
                    surrogate(H, sg_shape, sg_damp, sg_sharp, volts + o, thresholds ? thresholds + o : thr0, gi + r * H);
                    step_backward(H, gi + r * H, gz + r * H, gvn + r * H, gan ? gan + r * H : NULL, gzp + r * H, gthr,
                                  zp + r * H, vp + r * H, thresholds ? thresholds + o : thr0, pre_reset ? pre_reset + o : NULL,
                                  g_volts ? g_volts + o : NULL, g_spikes && t ? g_spikes + prev + r * H : NULL,
                                  alpha, rho, beta, g_alpha ? g_alpha + q : NULL, g_thr ? g_thr + q : NULL, reset, grad_reset);
                }
                if (w) sparse_rows_mm(rows, gi, H, H, w, wp, H, gz, H, idx);
                for (size_t j = 0; j < n; ++j) gz[j] = (w ? gz[j] : 0.0f) + gzp[j];
            }
            free(gzp); free(gthr); free(idx);
        }
    }
    free(wp);
}

/* Compressed rows of x [R,N] in one pass: rowptr [R+1] and the column and value of every non-zero,
   rows in order. cols/vals have room for R*N entries (untouched beyond what is written): each thread
   writes its rows from its own bound, then the parts are moved together. Entries are tested 8 at a
   time (one vector compare), then only the non-zeros are visited. Returns the count. */
int64_t csr_build(const float* x, int64_t rows, int64_t n, int64_t* rowptr, int32_t* cols, float* vals,
                  int threads) {
    int64_t start[threads + 1], count[threads + 1];
    int used = 1;
    rowptr[0] = 0;
    #pragma omp parallel num_threads(threads)
    {
        const int id = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t r0 = rows * id / nt, r1 = rows * (id + 1) / nt;
        int64_t j = r0 * n;
        for (int64_t r = r0; r < r1; ++r) {
            const float* xr = x + r * n;
            int64_t k = 0;
            for (; k + 8 <= n; k += 8) {
                unsigned mask = nonzero_mask(xr + k);
                while (mask) {  /* one step per non-zero */
                    const int q = __builtin_ctz(mask);
                    mask &= mask - 1;
                    cols[j] = (int32_t)(k + q);
                    vals[j++] = xr[k + q];
                }
            }
            for (; k < n; ++k)
                if (xr[k] != 0.0f) { cols[j] = (int32_t)k; vals[j++] = xr[k]; }
            rowptr[r + 1] = j;  /* absolute in this thread's part, rebased below */
        }
        start[id] = r0 * n;
        count[id] = j - r0 * n;
        if (id == 0) used = nt;
    }
    int64_t nnz = 0;
    for (int t = 0; t < used; ++t) {
        const int64_t r0 = rows * t / used, r1 = rows * (t + 1) / used, shift = start[t] - nnz;
        memmove(cols + nnz, cols + start[t], sizeof(int32_t) * (size_t)count[t]);
        memmove(vals + nnz, vals + start[t], sizeof(float) * (size_t)count[t]);
        for (int64_t r = r0; r < r1; ++r) rowptr[r + 1] -= shift;
        nnz += count[t];
    }
    return nnz;
}

#define NB 64  /* output columns per block: a [N, NB] panel (packed, contiguous) stays in L2 */

/* out [R,H] = x [R,N] @ wt [N,H] (+ bias [H], added last), from the non-zeros of x (CSR). */
void csr_mm(int64_t rows, int64_t n, const int64_t* rowptr, const int32_t* cols, const float* vals,
            const float* wt, int64_t h, const float* bias, float* out, int threads) {
    float* wp = pack(wt, n, h, NB);
    #pragma omp parallel num_threads(threads)
    for (int64_t c0 = 0; c0 < h; c0 += NB) {
        const float* panel = wp + (c0 / NB) * n * NB;
        const int64_t nb = h - c0 < NB ? h - c0 : NB;
        float bv[NB] = {0};
        if (bias) for (int64_t k = 0; k < nb; ++k) bv[k] = bias[c0 + k];
        #pragma omp for schedule(static) nowait
        for (int64_t r = 0; r < rows; ++r) {
            v8 acc[NB / 8];
            for (int q = 0; q < NB / 8; ++q) acc[q] = vset(0.0f);
            for (int64_t j = rowptr[r]; j < rowptr[r + 1]; ++j) {
                const v8 xv = vset(vals[j]);
                const float* wr = panel + cols[j] * NB;
                for (int q = 0; q < NB / 8; ++q) acc[q] = vfma(xv, vld(wr + 8 * q), acc[q]);
            }
            float* o = out + r * h + c0;
            if (nb == NB) {
                for (int q = 0; q < NB / 8; ++q) vst(o + 8 * q, bias ? acc[q] + vld(bv + 8 * q) : acc[q]);
            } else {
                float tmp[NB];
                for (int q = 0; q < NB / 8; ++q) vst(tmp + 8 * q, acc[q] + vld(bv + 8 * q));
                for (int64_t k = 0; k < nb; ++k) o[k] = tmp[k];
            }
        }
    }
    free(wp);
}

/* gwt [N,H] = x [R,N]^T @ g [R,H], from the non-zeros of x (CSR): threads own column blocks, each
   accumulated in a packed [N, NB] panel. */
void csr_mm_t(int64_t rows, int64_t n, const int64_t* rowptr, const int32_t* cols, const float* vals,
              const float* g, int64_t h, float* gwt, int threads) {
    const int64_t blocks = (h + NB - 1) / NB;
    #pragma omp parallel num_threads(threads)
    {
        float* panel = malloc(sizeof(float) * (size_t)(n * NB));
        #pragma omp for schedule(static)
        for (int64_t blk = 0; blk < blocks; ++blk) {
            const int64_t c0 = blk * NB, nb = h - c0 < NB ? h - c0 : NB;
            memset(panel, 0, sizeof(float) * (size_t)(n * NB));
            for (int64_t r = 0; r < rows; ++r) {
                if (rowptr[r] == rowptr[r + 1]) continue;
                float gt[NB] = {0};
                memcpy(gt, g + r * h + c0, sizeof(float) * (size_t)nb);
                v8 gv[NB / 8];
                for (int q = 0; q < NB / 8; ++q) gv[q] = vld(gt + 8 * q);
                for (int64_t j = rowptr[r]; j < rowptr[r + 1]; ++j) {
                    const v8 xv = vset(vals[j]);
                    float* o = panel + cols[j] * NB;
                    for (int q = 0; q < NB / 8; ++q) vst(o + 8 * q, vfma(xv, gv[q], vld(o + 8 * q)));
                }
            }
            for (int64_t c = 0; c < n; ++c) memcpy(gwt + c * h + c0, panel + c * NB, sizeof(float) * (size_t)nb);
        }
        free(panel);
    }
}
"""

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "lif_forward": ([_P, _I64, _I64, _I64] + [_P] * 8 + [_INT] + [_P] * 5 + [_INT], _I64),
    "lif_backward": ([_I64, _I64, _I64] + [_P] * 22 + [_INT, _INT, _INT, ctypes.c_float, ctypes.c_float, _INT], None),
    "csr_build": ([_P, _I64, _I64, _P, _P, _P, _INT], _I64),
    "csr_mm": ([_I64, _I64, _P, _P, _P, _P, _I64, _P, _P, _INT], None),
    "csr_mm_t": ([_I64, _I64, _P, _P, _P, _P, _I64, _P, _INT], None),
}


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
    # machine's build to another kind of CPU. -ffp-contract=off: no fused multiply-adds beyond the
    # explicit ones, so the forward rounds like the torch loop.
    flags = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC"]
    libs = ["-lm"]
    tag = hashlib.sha256((_SOURCE + cc + " ".join(flags) + platform.machine() + _cpu_model()).encode()).hexdigest()[:16]
    path = os.path.join(cache, f"spikes_{tag}.so")
    if not os.path.exists(path):
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            src = os.path.join(tmp, "spikes.c")
            with open(src, "w") as f:
                f.write(_SOURCE)
            out = os.path.join(tmp, "spikes.so")
            if subprocess.run([cc, *flags, src, "-o", out, *libs], capture_output=True).returncode != 0:
                return None
            os.replace(out, path)  # atomic: concurrent builders never see a partial library
    lib = ctypes.CDLL(path)
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
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


def available(*tensors: Tensor | None) -> bool:
    """True when the C loops can run on these tensors (CPU float32, library built); None is ignored."""
    ok = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors if t is not None)
    return ok and _library() is not None


def density(x: Tensor) -> float:
    """Fraction of non-zero entries, estimated on evenly spaced rows (last dimension kept whole: a
    contiguous read) holding about 65k entries."""
    rows = x.reshape(-1, x.shape[-1]) if x.dim() > 0 else x.reshape(1, 1)
    sample = rows[:: max(1, rows.shape[0] // max(1, 65536 // max(rows.shape[1], 1)))]
    return sample.count_nonzero().item() / max(sample.numel(), 1)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _threads() -> int:
    return torch.get_num_threads()


class NonZeros(NamedTuple):
    """Compressed-row index of a matrix [R, N]: row pointers (int64 [R + 1]), then the column (int32)
    and value (float32) of each non-zero, rows in order, columns increasing."""

    rowptr: Tensor
    cols: Tensor
    vals: Tensor
    shape: tuple[int, int]


_INDEX_CHUNK = 1 << 22  # entries of x indexed per C call: bounds the scratch to 32 MiB


def nonzeros(x: Tensor) -> NonZeros:
    """The non-zeros of x [R, N] (contiguous float32), indexed in chunks of rows."""
    rows, n = x.shape
    step = max(1, _INDEX_CHUNK // max(n, 1))
    rowptr = torch.zeros(rows + 1, dtype=torch.int64)
    # room for every entry of a chunk: only the pages written (about nnz entries) are touched
    cols_buf, vals_buf = torch.empty(min(rows, step) * n, dtype=torch.int32), torch.empty(min(rows, step) * n)
    cols, vals, base = [], [], 0
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        ptr = rowptr[r0 : r1 + 1]
        nnz = _library().csr_build(_ptr(x[r0:r1]), r1 - r0, n, _ptr(ptr), _ptr(cols_buf), _ptr(vals_buf), _threads())
        ptr += base  # the C call counts from zero
        cols.append(cols_buf[:nnz].clone())
        vals.append(vals_buf[:nnz].clone())
        base += nnz
    if not cols:
        return NonZeros(rowptr, torch.empty(0, dtype=torch.int32), torch.empty(0), (rows, n))
    return NonZeros(rowptr, torch.cat(cols), torch.cat(vals), (rows, n))


def sparse_mm(x: NonZeros, wt: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [R, N] @ wt [N, H] (+ bias [H]) from the non-zeros of x (wt, bias contiguous float32); each
    output sums its terms from zero in column order, then adds the bias."""
    out = torch.empty(x.shape[0], wt.shape[1])
    _library().csr_mm(*x.shape, _ptr(x.rowptr), _ptr(x.cols), _ptr(x.vals), _ptr(wt), wt.shape[1], _ptr(bias),
                      _ptr(out), _threads())
    return out


def sparse_mm_t(x: NonZeros, g: Tensor) -> Tensor:
    """x [R, N]^T @ g [R, H] -> [N, H] from the non-zeros of x (g contiguous float32)."""
    out = torch.empty(x.shape[1], g.shape[1])
    _library().csr_mm_t(*x.shape, _ptr(x.rowptr), _ptr(x.cols), _ptr(x.vals), _ptr(g), g.shape[1], _ptr(out),
                        _threads())
    return out


RESET_CODES = {"subtract": 0, "multiplicative": 1, "multiplicative_all": 2, "none": 3}
# surrogate-gradient shapes the C backward evaluates itself (the same formulas as spikestab.surrogate)
SURROGATE_CODES = {"fast-sigmoid": 0, "triangular": 1, "rectangular": 2}


def sequence_forward(current: Tensor, wt: Tensor | None, alpha: Tensor, threshold: Tensor, rho: Tensor | None,
                     beta: Tensor | None, v0: Tensor, z0: Tensor, a0: Tensor | None, reset: str,
                     keep_pre_reset: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, float]:
    """The forward time loop in one C call. current [T, B, H]; wt = W_hh^T [H, H] or None; per-neuron
    parameters [H]; state [B, H] (all contiguous float32). Returns voltages and spikes [T, B, H], the
    adaptive thresholds [T, B, H] (ALIF), the pre-reset voltages (``keep_pre_reset``), the final
    adaptation [B, H] (ALIF) and the spike density of steps 0..T-2 (counted on the way)."""
    steps, batch, hidden = current.shape
    volts, spikes = torch.empty_like(current), torch.empty_like(current)
    adaptive = rho is not None
    thresholds = torch.empty_like(current) if adaptive else None
    pre_reset = torch.empty_like(current) if keep_pre_reset else None
    a_out = torch.empty_like(v0) if adaptive else None
    count = _library().lif_forward(
        _ptr(current), steps, batch, hidden, _ptr(wt), _ptr(alpha), _ptr(threshold), _ptr(rho), _ptr(beta),
        _ptr(v0), _ptr(z0), _ptr(a0), RESET_CODES[reset], _ptr(volts), _ptr(spikes), _ptr(thresholds),
        _ptr(pre_reset), _ptr(a_out), _threads())
    return volts, spikes, thresholds, pre_reset, a_out, count / max((steps - 1) * batch * hidden, 1)


def sequence_backward(work: Tensor, w: Tensor | None, alpha: Tensor, threshold: Tensor, rho: Tensor | None,
                      beta: Tensor | None, volts: Tensor, spikes: Tensor, thresholds: Tensor | None,
                      pre_reset: Tensor | None, v0: Tensor, z0: Tensor, grads: dict[str, Tensor | None],
                      reset: str, grad_reset: bool, want_alpha: bool, want_thr: bool,
                      surrogate: tuple[str, float, float] | None) -> dict[str, Tensor | None]:
    """The backward time loop in one C call. ``work`` [T, B, H] receives the gradient of the input
    current; it holds the surrogate gradient at entry unless ``surrogate`` = (shape, dampening,
    sharpness) names one of ``SURROGATE_CODES``, evaluated in C; w = W_hh [H, H] or None; ``grads`` holds the
    incoming gradients "spikes", "volts" [T, B, H] and "v", "z", "a" [B, H] (None where absent).
    Returns the gradients of v0, z0, a0 (ALIF) and, per batch row, of alpha and the threshold [B, H]
    (when wanted). All tensors contiguous float32."""
    steps, batch, hidden = work.shape
    out = {"v0": torch.empty_like(v0), "z0": torch.empty_like(v0), "a0": torch.empty_like(v0) if rho is not None else None,
           "alpha": torch.empty_like(v0) if want_alpha else None, "thr": torch.empty_like(v0) if want_thr else None}
    _library().lif_backward(
        steps, batch, hidden, _ptr(w), _ptr(alpha), _ptr(threshold), _ptr(rho), _ptr(beta), _ptr(volts), _ptr(spikes),
        _ptr(thresholds), _ptr(pre_reset), _ptr(v0), _ptr(z0), _ptr(grads["spikes"]), _ptr(grads["volts"]),
        _ptr(grads["v"]), _ptr(grads["z"]), _ptr(grads["a"]), _ptr(work), _ptr(out["alpha"]), _ptr(out["thr"]),
        _ptr(out["v0"]), _ptr(out["z0"]), _ptr(out["a0"]), RESET_CODES[reset], int(grad_reset),
        SURROGATE_CODES[surrogate[0]] if surrogate else -1, *(surrogate[1:] if surrogate else (0.0, 0.0)), _threads())
    return out


class _EventLinear(torch.autograd.Function):
    """x W^T + b for a sparse x: forward and weight gradient visit only the non-zeros of x."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        nz = nonzeros(x.reshape(-1, x.shape[-1]).contiguous())
        out = sparse_mm(nz, weight.t().contiguous(), bias.contiguous())
        ctx.save_for_backward(weight)
        ctx.nz, ctx.x_shape = nz, x.shape
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        g2 = grad.reshape(-1, weight.shape[0]).contiguous()
        g_x = g_w = g_b = None
        if ctx.needs_input_grad[0]:
            g_x = (g2 @ weight).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            g_w = sparse_mm_t(ctx.nz, g2).t()
        if ctx.needs_input_grad[2]:
            g_b = g2.sum(0)
        return g_x, g_w, g_b


def event_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``torch.nn.functional.linear(x, weight, bias)`` computed from the non-zeros of x only."""
    return _EventLinear.apply(x, weight, bias)
