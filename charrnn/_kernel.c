/* The CPU sampler's per-step elementwise work, fused: what FastRNN's numpy cells do in ~10 ufunc calls a layer
 * (and Sampler._one in 5), done in one call each. At batch 1 a step's arithmetic is tiny; numpy's cost there is
 * the calls themselves and a tanh that is not vectorised, so the cells here do the same float32 operations, in
 * the same order, in one pass, with glibc's vector tanhf (libmvec) where the build found it.
 *
 * Built and loaded by charrnn/kernel.py with -ffp-contract=off: no a*b+c is fused into one rounding, so each
 * product and sum rounds as numpy's separate ufuncs round it. The only differences from numpy are the tanh and
 * exp implementations (each within a few ulp of the exact value).
 *
 * Layouts (row-major, float32): g/gh/gi (B, G*H) with row stride G*H; c (B, H) contiguous; h (B, H) columns of the
 * (B, L*H) state buffer, row stride h_stride. Any const pointer documented "or NULL" may be NULL. */

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(CHARRNN_MVEC) && defined(__x86_64__) && (defined(__AVX512F__) || defined(__AVX2__))
#include <immintrin.h>
#if defined(__AVX512F__)
#define VEC 16
typedef __m512 vfloat;
extern __m512 _ZGVeN16v_tanhf(__m512);
#define VTANH _ZGVeN16v_tanhf
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#else
#define VEC 8
typedef __m256 vfloat;
extern __m256 _ZGVdN8v_tanhf(__m256);
#define VTANH _ZGVdN8v_tanhf
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#endif
#endif

/* The build's tanh: 16 or 8 lanes (libmvec's AVX-512 or AVX2 tanhf), or 1 (scalar tanhf, which the loader refuses:
 * slower than numpy's own vectorised tanh). */
int kernel_lanes(void) {
#ifdef VEC
    return VEC;
#else
    return 1;
#endif
}

/* x[0:n] = tanh(x[0:n]) into y (y may be x). */
static void tanh_to(const float *x, float *y, long n) {
    long j = 0;
#ifdef VEC
    for (; j + VEC <= n; j += VEC) VSTORE(y + j, VTANH(VLOAD(x + j)));
    if (j < n) { /* the tail through a padded block: same function, so same results as a full block */
        float buf[VEC] = {0};
        memcpy(buf, x + j, (size_t)(n - j) * sizeof(float));
        VSTORE(buf, VTANH(VLOAD(buf)));
        memcpy(y + j, buf, (size_t)(n - j) * sizeof(float));
    }
#else
    for (; j < n; j++) y[j] = tanhf(x[j]);
#endif
}

/* One LSTM layer. g: the (B, 4H) gate pre-activations from the matmul, gates i, f, o, g with the sigmoid gates'
 * halving folded into the weights; overwritten. bias (4H,) or NULL; rows (B, 4H) (layer 0's table rows) or NULL.
 * numpy order: g += bias; g += rows; g = tanh(g); g[:3H] = g[:3H] * 0.5 + 0.5; c = c * f + i * g; h = o * tanh(c). */
void lstm_cell(float *g, const float *bias, const float *rows, float *c, float *h, long h_stride, int B, int H) {
    const long G = 4L * H;
    for (int b = 0; b < B; b++) {
        float *gb = g + b * G, *cb = c + (long)b * H, *hb = h + b * h_stride;
        if (bias)
            for (long j = 0; j < G; j++) gb[j] += bias[j];
        if (rows) {
            const float *rb = rows + b * G;
            for (long j = 0; j < G; j++) gb[j] += rb[j];
        }
        tanh_to(gb, gb, G);
        for (long j = 0; j < 3L * H; j++) gb[j] = gb[j] * 0.5f + 0.5f;
        const float *i = gb, *f = gb + H, *o = gb + 2L * H, *cand = gb + 3L * H;
        for (long j = 0; j < H; j++) cb[j] = cb[j] * f[j] + i[j] * cand[j];
        tanh_to(cb, hb, H);
        for (long j = 0; j < H; j++) hb[j] = o[j] * hb[j];
    }
}

/* One GRU layer. gh: (B, 3H) r, z, n from the hidden state's matmul, overwritten; bh (3H,) its bias (b_hn; r and z
 * carry theirs in the input share). gi: (B, 3H) the input share (layer 0's table rows, or the input matmul), only
 * read; bi (3H,) its bias or NULL (the table has it). numpy order: gh += bh; gi += bi; rz = tanh(gh_rz + gi_rz) * 0.5
 * + 0.5; n = tanh(gh_n * r + gi_n); h = n + z * (h - n). */
void gru_cell(float *gh, const float *bh, const float *gi, const float *bi, float *h, long h_stride, int B, int H) {
    const long G = 3L * H;
    for (int b = 0; b < B; b++) {
        float *gb = gh + b * G, *hb = h + b * h_stride;
        const float *ib = gi + b * G;
        if (bh)
            for (long j = 0; j < G; j++) gb[j] += bh[j];
        if (bi)
            for (long j = 0; j < 2L * H; j++) gb[j] += ib[j] + bi[j];
        else
            for (long j = 0; j < 2L * H; j++) gb[j] += ib[j];
        tanh_to(gb, gb, 2L * H);
        for (long j = 0; j < 2L * H; j++) gb[j] = gb[j] * 0.5f + 0.5f;
        const float *r = gb, *z = gb + H;
        float *n = gb + 2L * H;
        if (bi)
            for (long j = 0; j < H; j++) n[j] = n[j] * r[j] + (ib[2L * H + j] + bi[2L * H + j]);
        else
            for (long j = 0; j < H; j++) n[j] = n[j] * r[j] + ib[2L * H + j];
        tanh_to(n, n, H);
        for (long j = 0; j < H; j++) hb[j] = n[j] + z[j] * (hb[j] - n[j]);
    }
}

/* One tanh-RNN layer: h = tanh(a + bias + rows), a (B, H) from the matmul (overwritten), bias (H,) or NULL, rows
 * (B, H) or NULL. */
void rnn_cell(float *a, const float *bias, const float *rows, float *h, long h_stride, int B, int H) {
    for (int b = 0; b < B; b++) {
        float *ab = a + (long)b * H;
        if (bias)
            for (long j = 0; j < H; j++) ab[j] += bias[j];
        if (rows) {
            const float *rb = rows + (long)b * H;
            for (long j = 0; j < H; j++) ab[j] += rb[j];
        }
        tanh_to(ab, h + b * h_stride, H);
    }
}

/* One draw from one row of logits, Sampler._one's float64 arithmetic: p = logits; p -= max(p); p *= inv_temp;
 * p = exp(p); p = cumsum(p); the first index whose cumulative sum exceeds u * total (numpy's searchsorted
 * side="right"; V when none does, as with NaNs). work: (V,) float64 scratch. */
long draw_one(const float *logits, long V, double inv_temp, double u, double *work) {
    double top = -INFINITY;
    int nan = 0;
    for (long j = 0; j < V; j++) {
        double p = (double)logits[j];
        work[j] = p;
        if (p > top) top = p;
        if (p != p) nan = 1;
    }
    if (nan) return V; /* numpy: max is NaN, so every p is NaN, and searchsorted puts a NaN target after them all */
    double total = 0.0;
    for (long j = 0; j < V; j++) {
        double p = work[j] - top;
        p = p * inv_temp;
        total = total + exp(p);
        work[j] = total;
    }
    double target = u * total;
    if (!(target == target)) return V; /* NaN total (an infinite logit): numpy's cumsum is all NaN past it */
    for (long j = 0; j < V; j++)
        if (work[j] > target) return j;
    return V;
}

/* A whole batch-1 step in one call: what FastRNN._step_kernel does with three or more numpy matmuls and one
 * kernel call per layer, each paying Python's and numpy's call overhead (about a quarter of a 2x512 LSTM step).
 * The matrix-vector products go through the BLAS numpy's matmul runs on (its cblas_sgemv, whose address
 * kernel.py finds), so they keep its speed and its threads; the cells are the ones above.
 *
 * sgemv is declared with 64-bit integers. An LP64 BLAS (32-bit integers) reads the low halves of the same
 * registers and stack slots on x86-64, the only platform with a kernel, so either kind works for these sizes. */
typedef void (*sgemv_fn)(int layout, int trans, long m, long n, float alpha, const float *a, long lda,
                         const float *x, long incx, float beta, float *y, long incy);
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111 };

/* y (n,) = W (n, k) row-major times x (k,); b (n,) the map's bias or NULL, added by the cell (or, for the head,
 * by step1). */
typedef struct {
    const float *w, *b, *x;
    float *y;
    long n, k;
} product;

#define MAX_PRODUCTS 33 /* 16 GRU layers of two products, and the head */

typedef struct {
    sgemv_fn gemv;
    int kind; /* 0 LSTM, 1 GRU, 2 tanh RNN */
    int layers;
    long hidden;
    const float *table; /* (V, G*H) layer 0's input share by id, biases included */
    long vocab, row_len;
    float *h;        /* (L*H,) the state buffer */
    float *c;        /* (L, H) the LSTM's cells, or NULL */
    product p[MAX_PRODUCTS]; /* per layer its hidden-state product, then (GRU above layer 0) its input product;
                                the head last */
} step_plan;

static void gemv(const step_plan *s, const product *q) {
    s->gemv(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, q->n, q->k, 1.0f, q->w, q->k, q->x, 1, 0.0f, q->y, 1);
}

/* Feed character `id`; the logits land in the head product's y. Returns 0, or -1 for an id outside the table
 * (nothing is read or changed then). */
int step1(const step_plan *s, long id) {
    if (id < 0 || id >= s->vocab) return -1;
    const long H = s->hidden;
    const float *rows = s->table + id * s->row_len;
    const product *q = s->p;
    for (int l = 0; l < s->layers; l++, q++) {
        float *hl = s->h + l * H;
        gemv(s, q);
        if (s->kind == 0) {
            lstm_cell(q->y, q->b, l == 0 ? rows : NULL, s->c + l * H, hl, s->layers * H, 1, (int)H);
        } else if (s->kind == 1) {
            if (l == 0) {
                gru_cell(q->y, q->b, rows, NULL, hl, s->layers * H, 1, (int)H);
            } else {
                const product *in = q + 1;
                gemv(s, in);
                gru_cell(q->y, q->b, in->y, in->b, hl, s->layers * H, 1, (int)H);
                q++;
            }
        } else {
            rnn_cell(q->y, q->b, l == 0 ? rows : NULL, hl, s->layers * H, 1, (int)H);
        }
    }
    gemv(s, q);
    if (q->b)
        for (long j = 0; j < q->n; j++) q->y[j] += q->b[j];
    return 0;
}

/* Training's GRU steps (charrnn/grutrain.py): the elementwise work of one time step of one layer, forward and
 * backward, around torch's matmuls, so a step costs one matmul and one call instead of the ~10 (forward) and ~20
 * (backward) small tensor ops that dominate an autograd GRU at batch 16. The state and the saved gates are float32;
 * the matmuls' operands and results are "lp": bfloat16 when `bf16` is set (a mixed-precision run), else float32.
 * torch's GRU: r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n), h = n + z * (hp - n),
 * with gi = W_ih x + b_ih and gh = W_hh hp + b_hh; sigmoid(a) = tanh(a / 2) / 2 + 1/2. */

static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u); /* round to nearest even, as torch does */
    return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u) : rounded) >> 16); /* NaN stays NaN */
}

static inline float from_bf16(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Rows of float32 into lp: two plain loops the compiler vectorises, where a per-element branch would not. */
static void store_lp(void *dst, int bf16, long at, const float *src, long n) {
    if (!bf16) {
        memcpy((float *)dst + at, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *d = (uint16_t *)dst + at;
    for (long j = 0; j < n; j++) d[j] = to_bf16(src[j]);
}

static void load_lp(float *dst, const void *src, int bf16, long at, long n) {
    if (!bf16) {
        memcpy(dst, (const float *)src + at, (size_t)n * sizeof(float));
        return;
    }
    const uint16_t *s = (const uint16_t *)src + at;
    for (long j = 0; j < n; j++) dst[j] = from_bf16(s[j]);
}

/* Forward. gh (B, 3H) lp, the hidden matmul with b_hh; gi (B, 3H) float32, the input share with b_ih; hp (B, H) the
 * previous state. Writes h (B, H), h_lp (B, H) (the next matmul's operand) and saved (B, 4H): r, z, n, gh_n.
 * work: (4H,) float32 scratch. */
void gru_train_fwd(const void *gh, const float *gi, const float *hp, float *h, void *h_lp, float *saved, int bf16,
                   int B, int H, float *work) {
    const long G = 3L * H;
    for (int b = 0; b < B; b++) {
        const float *ib = gi + b * G, *pb = hp + (long)b * H;
        float *s = saved + 4L * H * b, *hb = h + (long)b * H;
        float *n = s + 2L * H, *ghn = s + 3L * H;
        load_lp(work, gh, bf16, b * G, G);
        for (long j = 0; j < 2L * H; j++) s[j] = (ib[j] + work[j]) * 0.5f;
        tanh_to(s, s, 2L * H);
        for (long j = 0; j < 2L * H; j++) s[j] = s[j] * 0.5f + 0.5f;
        for (long j = 0; j < H; j++) {
            ghn[j] = work[2L * H + j];
            n[j] = ib[2L * H + j] + s[j] * ghn[j];
        }
        tanh_to(n, n, H);
        for (long j = 0; j < H; j++) hb[j] = n[j] + s[H + j] * (pb[j] - n[j]);
        store_lp(h_lp, bf16, (long)b * H, hb, H);
    }
}

/* Backward through one step. dh = carry + dout + m, where m (B, H) lp is the later step's dgh @ W_hh (or NULL at the
 * window's last step); saved and hp as the forward wrote and read them. Writes dgi (B, 3H) lp (the gradient of gi,
 * and of b_ih), dgh (B, 3H) lp (of gh and b_hh) and carry (B, H) = dh * z, the part of dh that flows straight to hp;
 * adds dgi's and dgh's rows into the bias gradients d_bi and d_bh (3H,) float32. work: (4H,) float32 scratch. */
void gru_train_bwd(float *carry, const float *dout, const void *m, const float *saved, const float *hp, void *dgi,
                   void *dgh, int bf16, int B, int H, float *work, float *d_bi, float *d_bh) {
    const long G = 3L * H;
    float *g = work, *dh = work + G; /* g: dr, dz, dn, then dn * r in place of dn */
    for (int b = 0; b < B; b++) {
        const float *s = saved + 4L * H * b, *pb = hp + (long)b * H, *db = dout + (long)b * H;
        const float *r = s, *z = s + H, *n = s + 2L * H, *ghn = s + 3L * H;
        float *cb = carry + (long)b * H;
        if (m) {
            load_lp(dh, m, bf16, (long)b * H, H);
            for (long j = 0; j < H; j++) dh[j] = cb[j] + db[j] + dh[j];
        } else {
            for (long j = 0; j < H; j++) dh[j] = cb[j] + db[j];
        }
        for (long j = 0; j < H; j++) {
            const float dn = dh[j] * (1.0f - z[j]) * (1.0f - n[j] * n[j]);
            g[j] = dn * ghn[j] * r[j] * (1.0f - r[j]);
            g[H + j] = dh[j] * (pb[j] - n[j]) * z[j] * (1.0f - z[j]);
            g[2L * H + j] = dn;
            cb[j] = dh[j] * z[j];
        }
        store_lp(dgi, bf16, b * G, g, G);
        for (long j = 0; j < G; j++) d_bi[j] += g[j];
        for (long j = 0; j < H; j++) g[2L * H + j] *= r[j];
        store_lp(dgh, bf16, b * G, g, G);
        for (long j = 0; j < G; j++) d_bh[j] += g[j];
    }
}

/* ---- Dropout for training (charrnn/dropout.py) ----
 * y = x * scale where the element's 32 random bits are >= cut, else 0, computed in float32 and rounded to lp as
 * torch rounds; x and y (n,) lp, y may be x. The bits of elements 2k and 2k+1 are the two halves of splitmix64 of
 * seed + (k + 1) * 2^64/phi: a counter-based generator, so the same seed regenerates the same mask for the backward
 * pass (the gradient is dropped by the same call on it), and no mask is ever stored. torch's CPU bernoulli_ draws
 * one mt19937 number an element, in one thread: 8 ms for a batch-16 window of 512 units on the Zen 4. */
static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The 64 random bits of elements 2k and 2k+1. */
static inline uint64_t pair_bits(uint64_t seed, long k) {
    return splitmix64(seed + (uint64_t)(k + 1) * 0x9e3779b97f4a7c15ull);
}

void dropout_apply(const void *x, void *y, long n, uint64_t seed, uint32_t cut, float scale, int bf16) {
    const long pairs = n / 2;
    if (!bf16) {
        const float *xs = (const float *)x;
        float *ys = (float *)y;
        for (long k = 0; k < pairs; k++) {
            const uint64_t z = pair_bits(seed, k);
            const float a = xs[2 * k] * scale, b = xs[2 * k + 1] * scale; /* loaded always: then it vectorises */
            ys[2 * k] = (uint32_t)z >= cut ? a : 0.0f;
            ys[2 * k + 1] = (uint32_t)(z >> 32) >= cut ? b : 0.0f;
        }
        if (n & 1) ys[n - 1] = (uint32_t)pair_bits(seed, pairs) >= cut ? xs[n - 1] * scale : 0.0f;
        return;
    }
    const uint16_t *xs = (const uint16_t *)x;
    uint16_t *ys = (uint16_t *)y;
    for (long k = 0; k < pairs; k++) {
        const uint64_t z = pair_bits(seed, k);
        const float a = from_bf16(xs[2 * k]) * scale, b = from_bf16(xs[2 * k + 1]) * scale;
        ys[2 * k] = to_bf16((uint32_t)z >= cut ? a : 0.0f);
        ys[2 * k + 1] = to_bf16((uint32_t)(z >> 32) >= cut ? b : 0.0f);
    }
    if (n & 1) ys[n - 1] = to_bf16((uint32_t)pair_bits(seed, pairs) >= cut ? from_bf16(xs[n - 1]) * scale : 0.0f);
}
