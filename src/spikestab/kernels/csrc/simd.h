/* 8-float vectors (AVX on x86, split by the compiler elsewhere) and the register-tile sizes shared by
   the products and the time loops. Internal to the library. */
#ifndef SPIKESTAB_SIMD_H
#define SPIKESTAB_SIMD_H

#include <stdint.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

typedef float v8 __attribute__((vector_size(32)));

/* unaligned loads/stores via memcpy */
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

#define RMAX 6   /* batch rows per register tile */
#define NR 16    /* output columns per register tile (two vectors) */

#endif
