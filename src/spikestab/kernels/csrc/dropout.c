/* Dropout with torch's own random draws (spikestab/kernels/dropout.py): the keep mask of
   bernoulli_(keep) on torch's default CPU generator, which draws every entry from its mt19937 stream
   (two 32-bit outputs, the first the high word; kept when their low 53 bits * 2^-53 < keep), then
   out = x * (kept ? scale : 0), the product torch's dropout forms. The stream is torch's engine
   (ATen's core/MT19937RNGEngine.h) step for step, so the outputs and the generator state after the call
   are torch's bit for bit. The gain: no per-entry dispatch, and without a mask to return the draws of
   zero entries are skipped (their output is x * noise = x, a zero of the same sign); a sparse tensor's
   entries are drawn at their flat positions, the rest of the stream skipped. */
#include <string.h>

#include "spikestab.h"

#define MT_N 624
#define MT_M 397

static inline uint32_t mt_twist(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}

/* A new block of 624 words (torch's mt19937_engine::next_state). */
static void mt_next_state(uint32_t* s) {
    uint32_t* p = s;
    for (int j = MT_N - MT_M + 1; --j; p++) *p = p[MT_M] ^ mt_twist(p[0], p[1]);
    for (int j = MT_M; --j; p++) *p = p[MT_M - MT_N] ^ mt_twist(p[0], p[1]);
    *p = p[MT_M - MT_N] ^ mt_twist(p[0], s[0]);
}

/* One output: a new block when the engine's counter runs out, then the tempered next word. */
static inline uint32_t mt_draw(spk_dropout_args* g) {
    if (--g->left == 0) {
        mt_next_state(g->mt);
        g->left = MT_N;
        g->next = 0;
    }
    uint32_t y = g->mt[g->next++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

/* Advance the stream by count outputs without tempering the words skipped. */
static void mt_skip(spk_dropout_args* g, int64_t count) {
    while (count > 0) {
        if (g->left == 1) {  /* the next draw starts a new block */
            mt_next_state(g->mt);
            g->left = MT_N + 1;
            g->next = 0;
        }
        int64_t take = count < g->left - 1 ? count : g->left - 1;
        g->left -= (int32_t)take;
        g->next += (uint32_t)take;
        count -= take;
    }
}

static inline int kept(spk_dropout_args* g) {
    const uint64_t hi = mt_draw(g), lo = mt_draw(g);
    const uint64_t bits = ((hi << 32) | lo) & ((UINT64_C(1) << 53) - 1);
    return (double)bits * (1.0 / 9007199254740992.0) < g->keep;
}

/* Every entry drawn: the mask is returned (the input needs a gradient). */
static void dropout_all(spk_dropout_args* a) {
    const float* x = a->x;
    float* out = a->out;
    uint8_t* mask = a->kept;
    for (int64_t i = 0; i < a->n; i++) {
        const int k = kept(a);
        mask[i] = (uint8_t)k;
        out[i] = x[i] * (k ? a->scale : 0.0f);
    }
}

/* No mask: the non-zero entries drawn, the draws of the zeros in between skipped. */
static void dropout_nonzeros(spk_dropout_args* a) {
    const float* x = a->x;
    float* out = a->out;
    memcpy(out, x, (size_t)a->n * sizeof(float));
    int64_t done = 0; /* entries whose draws are taken or skipped */
    for (int64_t i = 0; i < a->n; i++) {
        if (x[i] == 0.0f) continue;
        mt_skip(a, 2 * (i - done));
        out[i] = x[i] * (kept(a) ? a->scale : 0.0f);
        done = i + 1;
    }
    mt_skip(a, 2 * (a->n - done));
}

/* The entries of a sparse tensor: those at a->index drawn, the draws of the others skipped. */
static void dropout_indexed(spk_dropout_args* a) {
    int64_t done = 0;
    for (int64_t j = 0; j < a->nnz; j++) {
        const int64_t i = a->index[j];
        mt_skip(a, 2 * (i - done));
        a->out[j] = a->x[j] * (kept(a) ? a->scale : 0.0f);
        done = i + 1;
    }
    mt_skip(a, 2 * (a->n - done));
}

int spk_dropout(spk_dropout_args* a) {
    if (a->index)
        dropout_indexed(a);
    else if (a->kept)
        dropout_all(a);
    else
        dropout_nonzeros(a);
    return SPK_OK;
}
