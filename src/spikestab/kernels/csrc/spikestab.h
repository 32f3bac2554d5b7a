/* The C ABI of spikestab's native kernels: what Python calls through ctypes (spikestab/kernels/cabi.py
   mirrors every struct here field for field; spk_abi_size lets it check the layout at load time).

   Every entry point returns SPK_OK or SPK_NO_MEMORY (a scratch allocation failed; no output is valid).
   All arrays are contiguous float32 unless stated; shapes in brackets, T steps, B batch rows, H neurons. */
#ifndef SPIKESTAB_H
#define SPIKESTAB_H

#include <stddef.h>
#include <stdint.h>

enum spk_status { SPK_OK = 0, SPK_NO_MEMORY = 1 };

/* Reset rules, in the order of spikestab.dynamics.RESETS (the Python side derives its codes from it). */
enum spk_reset { SPK_SUBTRACT = 0, SPK_MULTIPLICATIVE = 1, SPK_MULTIPLICATIVE_ALL = 2, SPK_NONE = 3 };

/* Surrogate-gradient shapes the backward evaluates itself; SPK_SG_GIVEN: work holds it at entry. */
enum spk_surrogate { SPK_SG_GIVEN = -1, SPK_SG_FAST_SIGMOID = 0, SPK_SG_TRIANGULAR = 1, SPK_SG_RECTANGULAR = 2 };

/* Compressed rows of a matrix [rows, n]: rowptr [rows + 1], then column and value of each non-zero. */
typedef struct {
    int64_t rows, n;
    int64_t* rowptr;
    int32_t* cols;
    float* vals;
} spk_csr;

/* The forward time loop of a LIF/ALIF layer. Optional (NULL): wt (feed-forward), rho and beta (LIF),
   thresholds, pre_reset and a_out (only ALIF / multiplicative_all without detached reset need them). */
typedef struct {
    int64_t T, B, H;
    const float* current;     /* [T,B,H] input current W_ih x + b */
    const float* wt;          /* [H,H] W_hh^T */
    const float* alpha;       /* [H] */
    const float* threshold;   /* [H] */
    const float* rho;         /* [H] */
    const float* beta;        /* [H] */
    const float* v0;          /* [B,H] */
    const float* z0;          /* [B,H] */
    const float* a0;          /* [B,H] */
    float* volts;             /* [T,B,H] out */
    float* spikes;            /* [T,B,H] out */
    float* thresholds;        /* [T,B,H] out: A_t (ALIF) */
    float* pre_reset;         /* [T,B,H] out: alpha v + I before the multiplicative_all factor */
    float* a_out;             /* [B,H] out: final adaptation */
    int64_t spikes_before_last;  /* out: spikes of steps 0 .. T-2 (for the recurrent weight gradient) */
    int32_t reset;            /* enum spk_reset */
    int32_t threads;
} spk_forward_args;

/* The backward time loop (the reverse of spk_lif_forward). work [T,B,H] holds the surrogate gradient at
   entry when sg_shape is SPK_SG_GIVEN and receives the gradient of the input current. Optional (NULL):
   w, rho/beta, thresholds, pre_reset, the incoming gradients g_*, and the outputs g_alpha, g_thr, g_a0. */
typedef struct {
    int64_t T, B, H;
    const float* w;           /* [H,H] W_hh */
    const float* alpha;       /* [H] */
    const float* threshold;   /* [H] */
    const float* rho;         /* [H] */
    const float* beta;        /* [H] */
    const float* volts;       /* [T,B,H] */
    const float* spikes;      /* [T,B,H] */
    const float* thresholds;  /* [T,B,H] */
    const float* pre_reset;   /* [T,B,H] */
    const float* v0;          /* [B,H] */
    const float* z0;          /* [B,H] */
    const float* g_spikes;    /* [T,B,H] */
    const float* g_volts;     /* [T,B,H] */
    const float* g_vT;        /* [B,H] */
    const float* g_zT;        /* [B,H] */
    const float* g_aT;        /* [B,H] */
    float* work;              /* [T,B,H] in/out */
    float* g_alpha;           /* [B,H] out, per batch row */
    float* g_thr;             /* [B,H] out, per batch row */
    float* g_v0;              /* [B,H] out */
    float* g_z0;              /* [B,H] out */
    float* g_a0;              /* [B,H] out */
    int64_t sg_nonzero;       /* out: non-zero surrogate-gradient entries, all steps (0: not counted,
                                 where the selected products cannot run) */
    int64_t sparse_rows;      /* out: (row, step) adjoint products taken over the active neurons only */
    float sg_dampening, sg_sharpness;
    float sparse_below;       /* the adjoint product gI_t W_hh of a tile's step is computed only at the
                                 neurons whose surrogate gradient at step t - 1 is non-zero when they
                                 number fewer than sparse_below times the non-zeros of the tile's gI_t
                                 (0: never; the same result to float rounding, see lif.c) */
    int32_t sg_shape;         /* enum spk_surrogate */
    int32_t reset;            /* enum spk_reset */
    int32_t grad_reset;       /* 1: the reset term carries gradient (detach_reset=False) */
    int32_t threads;
} spk_backward_args;

/* Dropout with torch's draws (dropout.c): out = x * (kept ? scale : 0) over a tensor of n entries, the
   keep mask drawn from the mt19937 state mt [624] / left / next of torch's CPU generator, which the call
   advances in place as torch's dropout of all n entries would. index NULL: x, out (and kept) hold all n
   entries; else only the nnz entries at the increasing flat positions index [nnz] (a sparse tensor). */
typedef struct {
    int64_t n;
    int64_t nnz;
    const int64_t* index;     /* [nnz] or NULL */
    const float* x;           /* [n] or [nnz] */
    float* out;               /* [n] or [nnz] out */
    uint8_t* kept;            /* [n] out: 1 where kept, or NULL (then zero entries only advance the stream) */
    uint32_t* mt;             /* [624] in/out */
    double keep;              /* 1 - p */
    int32_t left;             /* in/out: torch's engine counter */
    uint32_t next;            /* in/out: index of the next word */
    float scale;              /* the float32 1 / keep that torch's dropout multiplies by */
} spk_dropout_args;

enum spk_abi { SPK_ABI_CSR = 0, SPK_ABI_FORWARD = 1, SPK_ABI_BACKWARD = 2, SPK_ABI_DROPOUT = 3 };

/* sizeof the struct named by which (enum spk_abi), 0 for an unknown one. */
size_t spk_abi_size(int32_t which);

int spk_lif_forward(spk_forward_args* a);
int spk_lif_backward(spk_backward_args* a);

/* The non-zeros of x [out->rows, out->n] into out (cols/vals with room for rows * n entries); their
   count into *nnz. */
int spk_csr_build(const float* x, spk_csr* out, int64_t* nnz, int32_t threads);
/* out [rows, h] = x @ wt [n, h] (+ bias [h] or NULL, added last), from the non-zeros of x. */
int spk_csr_mm(const spk_csr* x, const float* wt, int64_t h, const float* bias, float* out, int32_t threads);
/* gwt [n, h] = x^T @ g [rows, h], from the non-zeros of x. */
int spk_csr_mm_t(const spk_csr* x, const float* g, int64_t h, float* gwt, int32_t threads);
int spk_dropout(spk_dropout_args* a);

#endif
