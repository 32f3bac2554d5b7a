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

/* A new block of 624 words (torch's mt19937_engine::next_state, written with indices so that the compiler
   vectorises it: each word reads the old value of the next one and a word 397 ahead or 227 behind). */
static void mt_next_state(uint32_t* restrict s) {
    int i;
    for (i = 0; i < MT_N - MT_M; i++) s[i] = s[i + MT_M] ^ mt_twist(s[i], s[i + 1]);
    for (; i < MT_N - 1; i++) s[i] = s[i + MT_M - MT_N] ^ mt_twist(s[i], s[i + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ mt_twist(s[MT_N - 1], s[0]);
}

static inline uint32_t mt_temper(uint32_t y) {
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

/* One output: a new block when the engine's counter runs out, then the tempered next word. */
static inline uint32_t mt_draw(spk_dropout_args* g) {
    if (--g->left == 0) {
        mt_next_state(g->mt);
        g->left = MT_N;
        g->next = 0;
    }
    return mt_temper(g->mt[g->next++]);
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

/* kept <=> (the draw's low 53 bits) * 2^-53 < keep <=> bits < ceil(keep * 2^53): the same test in integers. */
static inline uint64_t keep_threshold(double keep) {
    const double t = keep * 9007199254740992.0; /* exact: a power of two */
    const uint64_t f = (uint64_t)t;
    return (double)f == t ? f : f + 1;
}

static inline int kept_bits(uint32_t hi, uint32_t lo, uint64_t threshold) {
    return ((((uint64_t)hi << 32) | lo) & ((UINT64_C(1) << 53) - 1)) < threshold;
}

static inline int kept(spk_dropout_args* g, uint64_t threshold) {
    const uint32_t hi = mt_draw(g), lo = mt_draw(g);
    return kept_bits(hi, lo, threshold);
}

/* Every entry drawn: the mask is returned (the input needs a gradient). Pairs of words inside one block are
   read straight from the state (a vectorisable loop); a pair across two blocks goes through mt_draw. */
static void dropout_all(spk_dropout_args* a) {
    const float* x = a->x;
    float* out = a->out;
    uint8_t* mask = a->kept;
    const uint64_t threshold = keep_threshold(a->keep);
    const float scale = a->scale;
    int64_t i = 0;
    while (i < a->n) {
        const int64_t pairs = (a->left - 1) / 2; /* whole pairs left in this block */
        if (pairs == 0) {
            const int k = kept(a, threshold);
            mask[i] = (uint8_t)k;
            out[i] = x[i] * (k ? scale : 0.0f);
            i++;
            continue;
        }
        const int64_t m = a->n - i < pairs ? a->n - i : pairs;
        const uint32_t* w = a->mt + a->next;
        for (int64_t j = 0; j < m; j++) {
            const int k = kept_bits(mt_temper(w[2 * j]), mt_temper(w[2 * j + 1]), threshold);
            mask[i + j] = (uint8_t)k;
            out[i + j] = x[i + j] * (k ? scale : 0.0f);
        }
        a->left -= (int32_t)(2 * m);
        a->next += (uint32_t)(2 * m);
        i += m;
    }
}

/* No mask: the non-zero entries drawn, the draws of the zeros in between skipped. */
static void dropout_nonzeros(spk_dropout_args* a) {
    const float* x = a->x;
    float* out = a->out;
    const uint64_t threshold = keep_threshold(a->keep);
    memcpy(out, x, (size_t)a->n * sizeof(float));
    int64_t done = 0; /* entries whose draws are taken or skipped */
    for (int64_t i = 0; i < a->n; i++) {
        if (x[i] == 0.0f) continue;
        mt_skip(a, 2 * (i - done));
        out[i] = x[i] * (kept(a, threshold) ? a->scale : 0.0f);
        done = i + 1;
    }
    mt_skip(a, 2 * (a->n - done));
}

/* The entries of a sparse tensor: those at a->index drawn, the draws of the others skipped. */
static void dropout_indexed(spk_dropout_args* a) {
    const uint64_t threshold = keep_threshold(a->keep);
    int64_t done = 0;
    for (int64_t j = 0; j < a->nnz; j++) {
        const int64_t i = a->index[j];
        mt_skip(a, 2 * (i - done));
        a->out[j] = a->x[j] * (kept(a, threshold) ? a->scale : 0.0f);
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
