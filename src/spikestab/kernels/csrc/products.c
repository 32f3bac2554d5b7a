/* Event-driven products: the sparse matrix products of the input projection and its weight gradient
   (from a compressed-row index of the non-zeros, csr_*), and the row products the time loops use for
   the recurrent currents (spk_sparse_rows_mm). Spikes are binary and mostly zeros, so x @ W^T only
   needs the weight rows of the active inputs and the weight gradient g^T x only the gradient rows of
   the active entries. Every output is summed from zero in increasing column order. */
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "products.h"
#include "simd.h"
#include "spikestab.h"

/* b [K,N] (row-major) packed as ceil(N/width) panels [K, width], zero-padded: products then read each
   panel sequentially (no cache-set conflicts from a long row stride) and need no column tail.
   Returns a malloc'ed buffer, NULL when the allocation fails. */
float* spk_pack(const float* b, int64_t K, int64_t N, int64_t width) {
    const int64_t panels = (N + width - 1) / width;
    float* bp = malloc(sizeof(float) * (size_t)(panels * K * width));
    if (!bp) return NULL;
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


/* Columns k < n with a[k] != 0, increasing, into idx; returns their count. */
static int64_t row_nonzeros(const float* a, int64_t n, int32_t* idx) {
    int64_t nk = 0, k = 0;
    for (; k + 8 <= n; k += 8)
        for (unsigned m = nonzero_mask(a + k); m; m &= m - 1) idx[nk++] = (int32_t)(k + __builtin_ctz(m));
    for (; k < n; ++k)
        if (a[k] != 0.0f) idx[nk++] = (int32_t)k;
    return nk;
}

int64_t spk_count_nonzeros(const float* a, int64_t n) {
    int64_t total = 0, k = 0;
    for (; k + 8 <= n; k += 8) total += __builtin_popcount(nonzero_mask(a + k));
    for (; k < n; ++k) total += a[k] != 0.0f;
    return total;
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
void spk_sparse_rows_mm(int R, const float* a, int64_t lda, int64_t K, const float* b, const float* bp,
                           int64_t n, float* out, int64_t ldo, int32_t* scratch) {
    int32_t* restrict flags = scratch + K;
    int32_t* restrict uni = flags + K;
    int64_t total = 0;
    for (int r = 0; r < R; ++r) total += spk_count_nonzeros(a + r * lda, K);
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


/* Horizontal sum of the 8 lanes of v. */
static inline float hsum(v8 v) {
    float t[8];
    vst(t, v);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* out[c] = a[:K] . bt[c*K : c*K + K] for the columns c of the list (each a dot product with a row of
   bt = b^T), eight at a time so that eight independent sums share each load of a. */
static void listed_dots(const float* a, int64_t K, const float* bt, const int32_t* cols, int64_t nc, float* out) {
    int64_t j = 0;
    for (; j + 8 <= nc; j += 8) {
        v8 s[8];
        for (int q = 0; q < 8; ++q) s[q] = vset(0.0f);
        int64_t i = 0;
        for (; i + 8 <= K; i += 8) {
            const v8 av = vld(a + i);
            for (int q = 0; q < 8; ++q) s[q] = vfma(av, vld(bt + cols[j + q] * K + i), s[q]);
        }
        for (int q = 0; q < 8; ++q) {
            float r = hsum(s[q]);
            for (int64_t k = i; k < K; ++k) r += a[k] * bt[cols[j + q] * K + k];
            out[cols[j + q]] = r;
        }
    }
    for (; j < nc; ++j) {
        v8 s = vset(0.0f);
        int64_t i = 0;
        for (; i + 8 <= K; i += 8) s = vfma(vld(a + i), vld(bt + cols[j] * K + i), s);
        float r = hsum(s);
        for (int64_t k = i; k < K; ++k) r += a[k] * bt[cols[j] * K + k];
        out[cols[j]] = r;
    }
}

void spk_selected_mv(const float* a, int64_t K, const float* bt, const float* sel, int64_t n, float* out,
                     int32_t* scratch) {
    memset(out, 0, sizeof(float) * (size_t)n);
    listed_dots(a, K, bt, scratch, row_nonzeros(sel, n, scratch), out);
}

/* Compressed rows of x [R,N] in one pass: rowptr [R+1] and the column and value of every non-zero,
   rows in order. cols/vals have room for R*N entries (untouched beyond what is written): each thread
   writes its rows from its own bound, then the parts are moved together. Entries are tested 8 at a
   time (one vector compare), then only the non-zeros are visited. */
int spk_csr_build(const float* x, spk_csr* out, int64_t* nnz_out, int32_t threads) {
    const int64_t rows = out->rows, n = out->n;
    int64_t* rowptr = out->rowptr;
    int32_t* cols = out->cols;
    float* vals = out->vals;
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
    *nnz_out = nnz;
    return SPK_OK;
}

#define NB 64  /* output columns per block: a [N, NB] panel (packed, contiguous) stays in L2 */

int spk_csr_mm(const spk_csr* x, const float* wt, int64_t h, const float* bias, float* out, int32_t threads) {
    const int64_t rows = x->rows, n = x->n;
    const int64_t* rowptr = x->rowptr;
    const int32_t* cols = x->cols;
    const float* vals = x->vals;
    float* wp = spk_pack(wt, n, h, NB);
    if (!wp) return SPK_NO_MEMORY;
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
    return SPK_OK;
}

/* Threads own column blocks, each accumulated in a packed [N, NB] panel. A column of g holding a NaN
   or inf gives a NaN column of gwt, where the dense product is non-finite too (0 * NaN is NaN there):
   every row of g is read for it, also the rows with no non-zero in x, which the product skips. */
int spk_csr_mm_t(const spk_csr* x, const float* g, int64_t h, float* gwt, int32_t threads) {
    const int64_t rows = x->rows, n = x->n;
    const int64_t* rowptr = x->rowptr;
    const int32_t* cols = x->cols;
    const float* vals = x->vals;
    const int64_t blocks = (h + NB - 1) / NB;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        float* panel = malloc(sizeof(float) * (size_t)(n * NB));
        if (!panel) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t blk = 0; blk < blocks; ++blk) {
            if (!panel) continue;
            const int64_t c0 = blk * NB, nb = h - c0 < NB ? h - c0 : NB;
            memset(panel, 0, sizeof(float) * (size_t)(n * NB));
            v8 finite[NB / 8];  /* 0 * g summed over the rows: 0 where a column of g is finite, NaN where not */
            for (int q = 0; q < NB / 8; ++q) finite[q] = vset(0.0f);
            for (int64_t r = 0; r < rows; ++r) {
                float gt[NB] = {0};
                memcpy(gt, g + r * h + c0, sizeof(float) * (size_t)nb);
                v8 gv[NB / 8];
                for (int q = 0; q < NB / 8; ++q) {
                    gv[q] = vld(gt + 8 * q);
                    finite[q] += vset(0.0f) * gv[q];
                }
                if (rowptr[r] == rowptr[r + 1]) continue;
                for (int64_t j = rowptr[r]; j < rowptr[r + 1]; ++j) {
                    const v8 xv = vset(vals[j]);
                    float* o = panel + cols[j] * NB;
                    for (int q = 0; q < NB / 8; ++q) vst(o + 8 * q, vfma(xv, gv[q], vld(o + 8 * q)));
                }
            }
            float mark[NB];
            for (int q = 0; q < NB / 8; ++q) vst(mark + 8 * q, finite[q]);
            for (int64_t c = 0; c < n; ++c)
                for (int64_t k = 0; k < nb; ++k) gwt[c * h + c0 + k] = panel[c * NB + k] + mark[k];
        }
        free(panel);
    }
    return failed ? SPK_NO_MEMORY : SPK_OK;
}

size_t spk_abi_size(int32_t which) {
    switch (which) {
        case SPK_ABI_CSR: return sizeof(spk_csr);
        case SPK_ABI_FORWARD: return sizeof(spk_forward_args);
        case SPK_ABI_BACKWARD: return sizeof(spk_backward_args);
        case SPK_ABI_DROPOUT: return sizeof(spk_dropout_args);
        default: return 0;
    }
}
