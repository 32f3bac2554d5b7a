/* The whole forward and backward time loops of a LIF/ALIF layer, one call each (equations in
   spikestab/dynamics.py). Batch rows are independent, so each thread runs whole sequences of a tile of
   rows without any per-step synchronisation. The recurrent products (forward z W_hh^T, backward gI W_hh)
   visit only non-zero columns (spk_sparse_rows_mm). The forward performs the torch loop's floating-point
   operations in the same order (compiled with -ffp-contract=off; sums over spikes from zero in column
   order, then the input current added), so its spikes equal the reference loop's, NaN included: a
   non-finite centred voltage gives a NaN spike, as in spikestab.surrogate.heaviside. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "products.h"
#include "simd.h"
#include "spikestab.h"


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


/* sg[k] = damp * f(sharp * (v[k] - thr[k])) for the rational shapes of spikestab.surrogate (the others
   are evaluated in torch beforehand: SPK_SG_GIVEN). */
static void surrogate(int64_t H, int shape, float damp, float sharp, const float* restrict v,
                      const float* restrict thr, float* restrict sg) {
    switch (shape) {
        case SPK_SG_FAST_SIGMOID:
            for (int64_t k = 0; k < H; ++k) {
                const float d = 1.0f + 2.0f * fabsf(sharp * (v[k] - thr[k]));
                sg[k] = damp * (1.0f / (d * d));
            }
            break;
        case SPK_SG_TRIANGULAR:
            for (int64_t k = 0; k < H; ++k) {
                const float f = 1.0f - fabsf(sharp * (v[k] - thr[k]));
                sg[k] = damp * (f < 0.0f ? 0.0f : f);  /* NaN stays NaN, as torch's clamp keeps it */
            }
            break;
        case SPK_SG_RECTANGULAR:
            for (int64_t k = 0; k < H; ++k) sg[k] = damp * (2.0f * fabsf(sharp * (v[k] - thr[k])) < 1.0f ? 1.0f : 0.0f);
            break;
        default:
            break;
    }
}

/* One step of one batch row (H neurons) in one pass over the row: rec = W_hh z_{t-1} (recurrent
   layers), a/thr only for ALIF (adaptive; thr receives the threshold A_t), pre only where keep_pre
   (multiplicative_all). Each element performs the torch loop's operations in its order. reset,
   recurrent, adaptive and keep_pre are constants in every call (step_forward instantiates one loop for
   each combination), so that each is one vectorised loop. Returns the number of spikes. */
static inline __attribute__((always_inline)) int64_t step_row(
        const int reset, const int recurrent, const int adaptive, const int keep_pre, int64_t H,
        const float* restrict cur,
        const float* restrict rec, const float* restrict z, const float* restrict vp, const float* restrict alpha,
        const float* restrict thr0, const float* restrict rho, const float* restrict beta, float* restrict a,
        float* restrict v, float* restrict s, float* restrict thr, float* restrict pre) {
    int64_t n = 0;
    for (int64_t k = 0; k < H; ++k) {
        const float i = recurrent ? rec[k] + cur[k] : cur[k];
        float th = thr0[k];
        if (adaptive) {
            a[k] = rho[k] * a[k] + (1.0f - rho[k]) * z[k];
            thr[k] = th = thr0[k] + beta[k] * a[k];
        }
        float vk;
        switch (reset) {
            case SPK_SUBTRACT: vk = (alpha[k] * vp[k] + i) - z[k] * th; break;
            case SPK_MULTIPLICATIVE: vk = alpha[k] * vp[k] * (1.0f - z[k]) + i; break;
            case SPK_MULTIPLICATIVE_ALL: {
                const float p = alpha[k] * vp[k] + i;
                if (keep_pre) pre[k] = p;
                vk = p * (1.0f - z[k]);
                break;
            }
            default: vk = alpha[k] * vp[k] + i;
        }
        v[k] = vk;
        /* spikes H(d) of the centred voltage d, NaN where d is not finite (spikestab.surrogate.heaviside):
           0 * d is 0 for a finite d, NaN otherwise */
        const float d = vk - th;
        s[k] = (d > 0.0f ? 1.0f : 0.0f) + 0.0f * d;
        n += d > 0.0f;
    }
    return n;
}

/* step_row with its constants instantiated (rec NULL: feed-forward; a NULL: LIF; pre NULL: not kept). */
static int64_t step_forward(int reset, int64_t H, const float* cur, const float* rec, const float* z,
                            const float* vp, const float* alpha, const float* thr0, const float* rho,
                            const float* beta, float* a, float* v, float* s, float* thr, float* pre) {
#define SPK_ROW(rule, rc, ad, kp) step_row(rule, rc, ad, kp, H, cur, rec, z, vp, alpha, thr0, rho, beta, a, v, s, \
                                           thr, pre)
#define SPK_STEP_FORWARD(rule, kp) (a ? (rec ? SPK_ROW(rule, 1, 1, kp) : SPK_ROW(rule, 0, 1, kp)) \
                                      : (rec ? SPK_ROW(rule, 1, 0, kp) : SPK_ROW(rule, 0, 0, kp)))
    switch (reset) {
        case SPK_SUBTRACT: return SPK_STEP_FORWARD(SPK_SUBTRACT, 0);
        case SPK_MULTIPLICATIVE: return SPK_STEP_FORWARD(SPK_MULTIPLICATIVE, 0);
        case SPK_MULTIPLICATIVE_ALL:
            return pre ? SPK_STEP_FORWARD(SPK_MULTIPLICATIVE_ALL, 1) : SPK_STEP_FORWARD(SPK_MULTIPLICATIVE_ALL, 0);
        default: return SPK_STEP_FORWARD(SPK_NONE, 0);
    }
#undef SPK_STEP_FORWARD
#undef SPK_ROW
}

/* The forward time loop (spk_forward_args in spikestab.h). Each thread runs whole sequences of its row
   tiles: no synchronisation between steps. */
int spk_lif_forward(spk_forward_args* p) {
    const int64_t T = p->T, B = p->B, H = p->H;
    const float *cur = p->current, *wt = p->wt, *alpha = p->alpha, *thr0 = p->threshold, *rho = p->rho,
                *beta = p->beta, *v0 = p->v0, *z0 = p->z0, *a0 = p->a0;
    float *volts = p->volts, *spikes = p->spikes, *thresholds = p->thresholds, *pre_reset = p->pre_reset,
          *a_out = p->a_out;
    const int reset = p->reset;
    float* wtp = NULL;
    if (wt && !(wtp = spk_pack(wt, H, H, NR))) return SPK_NO_MEMORY;
    int64_t spikes_before_last = 0;
    int failed = 0;
    #pragma omp parallel num_threads(p->threads)
    {
        int64_t count = 0;
        const share_t share = thread_share(B);
        /* scratch for one tile: recurrent currents, thresholds (LIF: unused), non-zero lists */
        float* rec = malloc(sizeof(float) * (size_t)(RMAX * H));
        float* thr = malloc(sizeof(float) * (size_t)H);
        int32_t* idx = malloc(sizeof(int32_t) * (size_t)(3 * H));
        if (!rec || !thr || !idx) {
            #pragma omp atomic write
            failed = 1;
        }
        for (int64_t tile = 0; tile < share.tiles && rec && thr && idx; ++tile) {
            const int64_t b0 = tile_start(share, tile);
            const int rows = (int)(tile_start(share, tile + 1) - b0);
            float* a = rho ? a_out + b0 * H : NULL;
            if (a) memcpy(a, a0 + b0 * H, sizeof(float) * (size_t)(rows * H));
            for (int64_t t = 0; t < T; ++t) {
                const int64_t off = (t * B + b0) * H, prev = ((t - 1) * B + b0) * H;
                const float* zp = t ? spikes + prev : z0 + b0 * H;
                const float* vp = t ? volts + prev : v0 + b0 * H;
                if (wt) spk_sparse_rows_mm(rows, zp, H, H, wt, wtp, H, rec, H, idx);
                for (int r = 0; r < rows; ++r) {
                    const int64_t o = off + r * H;
                    const int64_t n = step_forward(reset, H, cur + o, wt ? rec + r * H : NULL, zp + r * H, vp + r * H,
                                                   alpha, thr0, rho, beta, a ? a + r * H : NULL, volts + o, spikes + o,
                                                   thresholds ? thresholds + o : thr, pre_reset ? pre_reset + o : NULL);
                    if (t + 1 < T) count += n;
                }
            }
        }
        free(rec); free(thr); free(idx);
        #pragma omp atomic
        spikes_before_last += count;
    }
    free(wtp);
    p->spikes_before_last = spikes_before_last;
    return failed ? SPK_NO_MEMORY : SPK_OK;
}

/* One reverse step of one batch row (H neurons) in one pass over the row. At entry gi holds the
   surrogate gradient, gz the gradient of z_t, gvn that of v_t through step t + 1 (and gan that of
   a_t, ALIF), g_volts and g_spikes_prev the gradients of v_t and z_{t-1} from outside (rows of zeros
   when there are none); at exit gi holds the gradient of the input current I_t, gvn that of v_{t-1},
   gan that of a_{t-1}, gzp the gradient of z_{t-1} other than through W_hh and gat that of the
   threshold A_t. reset, adaptive (gan, rho, beta used) and grad_reset (pre used by the
   multiplicative_all rule) are constants in every call: step_backward instantiates one loop for each
   combination, so that each is one vectorised loop. */
static inline __attribute__((always_inline)) void step_row_backward(
        const int reset, const int adaptive, const int grad_reset, int64_t H, float* restrict gi,
        const float* restrict gz, float* restrict gvn, float* restrict gan, float* restrict gzp,
        float* restrict gat, const float* restrict zp, const float* restrict vp, const float* restrict thr,
        const float* restrict pre, const float* restrict g_volts, const float* restrict g_spikes_prev,
        const float* restrict alpha, const float* restrict rho, const float* restrict beta) {
    for (int64_t k = 0; k < H; ++k) {
        float ga_thr = -(gz[k] * gi[k]);
        float g = (gvn[k] + gz[k] * gi[k]) + g_volts[k];  /* gradient of v_t */
        float gp = 0.0f;
        switch (reset) {
            case SPK_MULTIPLICATIVE_ALL:
                if (grad_reset) gp = -g * pre[k];
                g = g * (1.0f - zp[k]);
                gvn[k] = g * alpha[k];
                break;
            case SPK_MULTIPLICATIVE:
                gvn[k] = g * alpha[k] * (1.0f - zp[k]);
                if (grad_reset) gp = -g * alpha[k] * vp[k];
                break;
            case SPK_SUBTRACT:
                gvn[k] = g * alpha[k];
                if (grad_reset) {
                    ga_thr -= g * zp[k];
                    gp = -g * thr[k];
                }
                break;
            default:
                gvn[k] = g * alpha[k];
        }
        if (adaptive) {
            const float ga = gan[k] + beta[k] * ga_thr;
            gan[k] = rho[k] * ga;
            gp += (1.0f - rho[k]) * ga;
        }
        gi[k] = g;
        gzp[k] = gp + g_spikes_prev[k];
        gat[k] = ga_thr;
    }
}

/* step_row_backward with its constants instantiated, then the per-row parameter gradients (NULL: not
   wanted) from what it left: g_alpha += gI v_{t-1} (times 1 - z_{t-1} for the multiplicative rule),
   g_thr += the gradient of A_t. */
static void step_backward(int reset, int64_t H, float* gi, const float* gz, float* gvn, float* gan, float* gzp,
                          float* gat, const float* zp, const float* vp, const float* thr, const float* pre,
                          const float* g_volts, const float* g_spikes_prev, const float* alpha, const float* rho,
                          const float* beta, float* restrict g_alpha, float* restrict g_thr, int grad_reset) {
#define SPK_ROW(rule, ad, gr) step_row_backward(rule, ad, gr, H, gi, gz, gvn, gan, gzp, gat, zp, vp, thr, pre, \
                                                g_volts, g_spikes_prev, alpha, rho, beta)
#define SPK_STEP_BACKWARD(rule) (gan ? (grad_reset ? SPK_ROW(rule, 1, 1) : SPK_ROW(rule, 1, 0)) \
                                     : (grad_reset ? SPK_ROW(rule, 0, 1) : SPK_ROW(rule, 0, 0)))
    switch (reset) {
        case SPK_SUBTRACT: SPK_STEP_BACKWARD(SPK_SUBTRACT); break;
        case SPK_MULTIPLICATIVE: SPK_STEP_BACKWARD(SPK_MULTIPLICATIVE); break;
        case SPK_MULTIPLICATIVE_ALL: SPK_STEP_BACKWARD(SPK_MULTIPLICATIVE_ALL); break;
        default: SPK_STEP_BACKWARD(SPK_NONE);
    }
#undef SPK_STEP_BACKWARD
#undef SPK_ROW
    if (g_alpha) {
        if (reset == SPK_MULTIPLICATIVE) for (int64_t k = 0; k < H; ++k) g_alpha[k] += gi[k] * vp[k] * (1.0f - zp[k]);
        else for (int64_t k = 0; k < H; ++k) g_alpha[k] += gi[k] * vp[k];
    }
    if (g_thr) for (int64_t k = 0; k < H; ++k) g_thr[k] += gat[k];
}

/* The surrogate gradient of one row at offset o into work (unless given there: SPK_SG_GIVEN). */
static void row_surrogate(const spk_backward_args* p, int64_t o) {
    if (p->sg_shape != SPK_SG_GIVEN)
        surrogate(p->H, p->sg_shape, p->sg_dampening, p->sg_sharpness, p->volts + o,
                  p->thresholds ? p->thresholds + o : p->threshold, p->work + o);
}

/* row_surrogate for the rows b0 .. b0 + rows of step t; returns the number of non-zeros. */
static int64_t tile_surrogate(const spk_backward_args* p, int64_t t, int64_t b0, int rows) {
    int64_t n = 0;
    for (int r = 0; r < rows; ++r) {
        const int64_t o = (t * p->B + b0 + r) * p->H;
        row_surrogate(p, o);
        n += spk_count_nonzeros(p->work + o, p->H);
    }
    return n;
}

/* Whether a [n] holds only finite values (0 * a sums to 0 exactly then, to NaN otherwise). */
static int all_finite(const float* a, int64_t n) {
    v8 acc = vset(0.0f);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) acc += vset(0.0f) * vld(a + k);
    float s = 0.0f;
    for (; k < n; ++k) s += 0.0f * a[k];
    float t[8];
    vst(t, acc);
    for (int q = 0; q < 8; ++q) s += t[q];
    return s == 0.0f;
}

/* gz [rows, H] = gi [rows, H] @ W_hh, the adjoint product of step t >= 1. The gradient of z_{t-1} enters
   the rest of the backward only multiplied by the surrogate gradient of step t - 1 (sg_prev), so where
   that is zero its W_hh part is never used: with sparse (wt = W_hh^T given) the product is one dot
   product per neuron with a non-zero sg_prev, and 0 elsewhere. A non-finite gi would make the unused
   entries NaN (0 * NaN is NaN in the dense form), so such a tile takes the full product. Returns 1 when
   the product was taken over the active neurons only. */
static int adjoint_product(int rows, int64_t H, const float* gi, const float* w, const float* wp,
                           const float* wt, const float* sg_prev, int sparse, float* gz, int32_t* idx) {
    if (sparse && wt && all_finite(gi, rows * H)) {
        for (int r = 0; r < rows; ++r) spk_selected_mv(gi + r * H, H, wt, sg_prev + r * H, H, gz + r * H, idx);
        return 1;
    }
    spk_sparse_rows_mm(rows, gi, H, H, w, wp, H, gz, H, idx);
    return 0;
}

/* W_hh^T for the selected products (NULL where they cannot run: no recurrence, sparse_below 0, a
   non-finite weight, whose 0 * inf the dense product would spread). *failed set when out of memory. */
static float* transposed_weights(const spk_backward_args* p, int* failed) {
    const int64_t H = p->H;
    if (!p->w || p->sparse_below <= 0.0f || !all_finite(p->w, H * H)) return NULL;
    float* wt = malloc(sizeof(float) * (size_t)(H * H));
    if (!wt) *failed = 1;
    else for (int64_t j = 0; j < H; ++j) for (int64_t k = 0; k < H; ++k) wt[k * H + j] = p->w[j * H + k];
    return wt;
}

/* The reverse steps of one tile of rows (b0 .. b0 + rows), from its incoming gradients (set by
   spk_lif_backward) to g_v0, g_z0, g_a0. Where the selected products may run (wt given) the surrogate
   gradient is evaluated a step ahead, so that the adjoint product of step t knows which neurons step
   t - 1 needs it at, and its non-zeros counted into nonzero; elsewhere row by row just before its use
   (not counted: the count costs a few % there). Counts into sparse_rows. */
static void tile_backward(const spk_backward_args* p, const float* wp, const float* wt, int64_t b0, int rows,
                          float* gzp, float* gat, const float* zeros, int32_t* idx, int64_t* nonzero,
                          int64_t* sparse_rows) {
    const int64_t T = p->T, B = p->B, H = p->H;
    const size_t n = (size_t)(rows * H);
    float *gz = p->g_z0 + b0 * H, *gvn = p->g_v0 + b0 * H, *gan = p->rho ? p->g_a0 + b0 * H : NULL;
    int64_t active = wt ? tile_surrogate(p, T - 1, b0, rows) : 0;
    *nonzero += active;
    for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t off = (t * B + b0) * H, prev = ((t - 1) * B + b0) * H;
        const float* zp = t ? p->spikes + prev : p->z0 + b0 * H;
        const float* vp = t ? p->volts + prev : p->v0 + b0 * H;
        float* gi = p->work + off;
        for (int r = 0; r < rows; ++r) {
            const int64_t o = off + r * H, q = b0 * H + r * H;
            const float* thr = p->thresholds ? p->thresholds + o : p->threshold;
            if (!wt) row_surrogate(p, o);
            step_backward(p->reset, H, gi + r * H, gz + r * H, gvn + r * H, gan ? gan + r * H : NULL, gzp + r * H,
                          gat, zp + r * H, vp + r * H, thr, p->pre_reset ? p->pre_reset + o : NULL,
                          p->g_volts ? p->g_volts + o : zeros, p->g_spikes && t ? p->g_spikes + prev + r * H : zeros,
                          p->alpha, p->rho, p->beta, p->g_alpha ? p->g_alpha + q : NULL,
                          p->g_thr ? p->g_thr + q : NULL, p->grad_reset);
        }
        if (wt && t) {
            active = tile_surrogate(p, t - 1, b0, rows);
            *nonzero += active;
        }
        if (p->w) {
            /* the full product's work grows with the non-zeros of gi (it skips zero columns), at most n */
            const float below = p->sparse_below * (float)n;
            const int sparse = wt && t && (float)active < below &&
                               (float)active < p->sparse_below * (float)spk_count_nonzeros(gi, (int64_t)n);
            if (adjoint_product(rows, H, gi, p->w, wp, wt, p->work + prev, sparse, gz, idx)) *sparse_rows += rows;
        }
        for (size_t j = 0; j < n; ++j) gz[j] = (p->w ? gz[j] : 0.0f) + gzp[j];
    }
}

/* The backward time loop (spk_backward_args in spikestab.h; the reverse of spk_lif_forward, equations
   in spikestab/kernels/fused.py). The adjoint product gi_t W_hh visits only the columns where some row of
   the tile has gi != 0, and, below sparse_below, only the neurons active at step t - 1 (adjoint_product). */
int spk_lif_backward(spk_backward_args* p) {
    const int64_t B = p->B, H = p->H;
    float* wp = NULL;
    if (p->w && !(wp = spk_pack(p->w, H, H, NR))) return SPK_NO_MEMORY;
    int failed = 0;
    float* wt = transposed_weights(p, &failed);
    int64_t nonzero = 0, sparse_rows = 0;
    #pragma omp parallel num_threads(p->threads) if (!failed)
    {
        const share_t share = thread_share(B);
        /* scratch: gradients of z_{t-1} beside W_hh for a tile, of A_t for a row, a row of zeros (no
           g_volts and g_spikes), non-zero lists */
        float* gzp = malloc(sizeof(float) * (size_t)(RMAX * H));
        float* gat = malloc(sizeof(float) * (size_t)H);
        float* zeros = calloc((size_t)H, sizeof(float));
        int32_t* idx = malloc(sizeof(int32_t) * (size_t)(3 * H));
        const int ok = gzp && gat && zeros && idx && !failed;
        int64_t nz = 0, sr = 0;
        if (!ok) {
            #pragma omp atomic write
            failed = 1;
        }
        for (int64_t tile = 0; tile < share.tiles && ok; ++tile) {
            const int64_t b0 = tile_start(share, tile);
            const int rows = (int)(tile_start(share, tile + 1) - b0);
            const int64_t last = ((p->T - 1) * B + b0) * H;
            for (size_t j = 0; j < (size_t)(rows * H); ++j) {
                const int64_t q = b0 * H + (int64_t)j;
                p->g_v0[q] = p->g_vT ? p->g_vT[q] : 0.0f;
                p->g_z0[q] = (p->g_zT ? p->g_zT[q] : 0.0f) + (p->g_spikes ? p->g_spikes[last + (int64_t)j] : 0.0f);
                if (p->rho) p->g_a0[q] = p->g_aT ? p->g_aT[q] : 0.0f;
                if (p->g_alpha) p->g_alpha[q] = 0.0f;
                if (p->g_thr) p->g_thr[q] = 0.0f;
            }
            tile_backward(p, wp, wt, b0, rows, gzp, gat, zeros, idx, &nz, &sr);
        }
        free(gzp); free(gat); free(zeros); free(idx);
        #pragma omp atomic
        nonzero += nz;
        #pragma omp atomic
        sparse_rows += sr;
    }
    free(wp);
    free(wt);
    p->sg_nonzero = nonzero;
    p->sparse_rows = sparse_rows;
    return failed ? SPK_NO_MEMORY : SPK_OK;
}
