/* Dense-panel packing and the event-driven row products the time loops use. Internal to the library. */
#ifndef SPIKESTAB_PRODUCTS_H
#define SPIKESTAB_PRODUCTS_H

#include <stdint.h>

/* b [K,N] (row-major) packed as ceil(N/width) panels [K, width], zero-padded. Returns a malloc'ed
   buffer, or NULL when the allocation fails. */
float* spk_pack(const float* b, int64_t K, int64_t N, int64_t width);

/* out [R, n] = a [R, K] (row stride lda) @ b [K, n], visiting only the non-zeros of a (R <= RMAX);
   bp is b packed by spk_pack with width NR; scratch: 3 * K ints. */
void spk_sparse_rows_mm(int R, const float* a, int64_t lda, int64_t K, const float* b, const float* bp,
                        int64_t n, float* out, int64_t ldo, int32_t* scratch);

/* The number of non-zeros (NaN included) of a [n]. */
int64_t spk_count_nonzeros(const float* a, int64_t n);

/* out [n] = a [K] @ b [K, n] in the columns c where sel[c] != 0 (NaN included), 0 in the others: one
   dot product of a with row c of bt = b^T [n, K] per selected column (summed in 8 lanes, then across
   them: equal to the full product's entries to float rounding). scratch: n ints. */
void spk_selected_mv(const float* a, int64_t K, const float* bt, const float* sel, int64_t n, float* out,
                     int32_t* scratch);

#endif
