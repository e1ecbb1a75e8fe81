/* Matrix-vector products y = W x for benchmarks/bf16_matvec.py: fp32 weights, and bf16 weights two ways. At batch 1
 * a sampler step reads every weight once, so its speed is the bandwidth of the cache the weights sit in; bf16 halves
 * the bytes. Built only where the CPU has AVX512_BF16 (-march=native). W is (N, K) row-major, K a multiple of 32.
 *
 * - matvec_f32: fp32 weights and x, four rows at a time (16-lane FMAs, one accumulator a row).
 * - matvec_bf16_dot: bf16 weights and x rounded to bf16 (round to nearest even), _mm512_dpbf16_ps, which multiplies
 *   pairs of bf16 and accumulates in fp32: 32 weights an instruction.
 * - matvec_bf16_up: bf16 weights widened to fp32 in registers (a shift: bf16 is fp32's top half), fp32 x and FMA;
 *   the activations keep full precision, at two more instructions per 16 weights. */

#include <immintrin.h>
#include <stdint.h>

void matvec_f32(const float *W, const float *x, float *y, int N, int K) {
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const float *w0 = W + (long)n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int k = 0; k < K; k += 16) {
            __m512 xv = _mm512_loadu_ps(x + k);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xv, a3);
        }
        y[n] = _mm512_reduce_add_ps(a0);
        y[n + 1] = _mm512_reduce_add_ps(a1);
        y[n + 2] = _mm512_reduce_add_ps(a2);
        y[n + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; n < N; n++) {
        __m512 a = _mm512_setzero_ps();
        for (int k = 0; k < K; k += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(W + (long)n * K + k), _mm512_loadu_ps(x + k), a);
        y[n] = _mm512_reduce_add_ps(a);
    }
}

/* xb: scratch of K bf16, the rounded x. */
void matvec_bf16_dot(const uint16_t *W, const float *x, float *y, int N, int K, uint16_t *xb) {
    for (int k = 0; k < K; k += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
        _mm512_storeu_si512((void *)(xb + k), (__m512i)v);
    }
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const uint16_t *w0 = W + (long)n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int k = 0; k < K; k += 32) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(xb + k));
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(w0 + k)), xv);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512((const void *)(w1 + k)), xv);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512((const void *)(w2 + k)), xv);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512((const void *)(w3 + k)), xv);
        }
        y[n] = _mm512_reduce_add_ps(a0);
        y[n + 1] = _mm512_reduce_add_ps(a1);
        y[n + 2] = _mm512_reduce_add_ps(a2);
        y[n + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; n < N; n++) {
        __m512 a = _mm512_setzero_ps();
        for (int k = 0; k < K; k += 32)
            a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512((const void *)(W + (long)n * K + k)),
                                 (__m512bh)_mm512_loadu_si512((const void *)(xb + k)));
        y[n] = _mm512_reduce_add_ps(a);
    }
}

static inline __m512 widen(const uint16_t *p) { /* 16 bf16 -> 16 fp32 */
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

void matvec_bf16_up(const uint16_t *W, const float *x, float *y, int N, int K) {
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const uint16_t *w0 = W + (long)n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int k = 0; k < K; k += 16) {
            __m512 xv = _mm512_loadu_ps(x + k);
            a0 = _mm512_fmadd_ps(widen(w0 + k), xv, a0);
            a1 = _mm512_fmadd_ps(widen(w1 + k), xv, a1);
            a2 = _mm512_fmadd_ps(widen(w2 + k), xv, a2);
            a3 = _mm512_fmadd_ps(widen(w3 + k), xv, a3);
        }
        y[n] = _mm512_reduce_add_ps(a0);
        y[n + 1] = _mm512_reduce_add_ps(a1);
        y[n + 2] = _mm512_reduce_add_ps(a2);
        y[n + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; n < N; n++) {
        __m512 a = _mm512_setzero_ps();
        for (int k = 0; k < K; k += 16) a = _mm512_fmadd_ps(widen(W + (long)n * K + k), _mm512_loadu_ps(x + k), a);
        y[n] = _mm512_reduce_add_ps(a);
    }
}
