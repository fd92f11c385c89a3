/* Optional accelerator for calibration histograms (loaded with ctypes; pure C, no Python API).
 *
 * abs_hist(x, n, inv_width, nbins, hist, minmax): one pass over x that adds
 * hist[floor(float32(|x[i]|) * float32(inv_width))] += 1 and tracks min and max
 * (minmax[0], minmax[1]).  Values whose bin is >= nbins (and NaN/Inf) are not counted;
 * their number is returned, so the caller can grow the histogram and count again (rare:
 * only when the range grows).
 *
 * The work is split in blocks of 1024 values: a vector pass computes the block's bin
 * indices (and min/max), then a scalar pass increments eight interleaved sub-histograms
 * (eight, so that runs of equal bins, common in smooth activations, do not serialise on
 * store-to-load forwarding), prefetching the next block meanwhile.  The vector pass uses
 * AVX-512 where the CPU has it (chosen at run time), SSE2 otherwise, plain C elsewhere;
 * all three compute the same float32 products, so the histograms are identical.
 * FYEXPORT_NO_AVX512=1 in the environment forces the SSE2 pass (the tests check both).
 * Measured on a 2-core Xeon with AVX-512 on yolov7 activations: 0.45 ns per value,
 * against 0.7 ns for one interleaved loop of four SSE2 lanes and four sub-histograms.
 * The sub-histograms live in a per-thread scratch buffer that stays zeroed between calls
 * (no allocation per call: it cost 20 us, a tenth of a small tensor's counting).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define SUB 8
#define BLK 1024
#define PREFETCH_AHEAD 4096 /* floats (16 KiB) */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FH_X86 1
#include <immintrin.h>
#endif

typedef void (*block_fn)(const float *, int, float, float, int32_t *, float *, float *);

/* Scalar tail (and the whole block where no vector unit is known). */
static void block_c(const float *x, int m, float iw, float lim, int32_t *idx, float *pmn, float *pmx) {
    float mn = *pmn, mx = *pmx;
    for (int j = 0; j < m; j++) {
        float v = x[j];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        float f = fabsf(v) * iw;
        idx[j] = f < lim ? (int32_t)f : (int32_t)lim; /* NaN and Inf compare false */
    }
    *pmn = mn;
    *pmx = mx;
}

#ifdef FH_X86
/* Fold the lanes of a vector pass's running min and max into *pmn and *pmx. */
static void fold_lanes(const float *lo, const float *hi, int lanes, float *pmn, float *pmx) {
    float mn = *pmn, mx = *pmx;
    for (int k = 0; k < lanes; k++) {
        mn = lo[k] < mn ? lo[k] : mn;
        mx = hi[k] > mx ? hi[k] : mx;
    }
    *pmn = mn;
    *pmx = mx;
}

/* min(NaN, lim) and min(Inf, lim) give lim: non-finite values land in the overflow slot. */
__attribute__((target("sse2")))
static void block_sse2(const float *x, int m, float iw, float lim, int32_t *idx, float *pmn, float *pmx) {
    __m128 vmn = _mm_set1_ps(*pmn), vmx = _mm_set1_ps(*pmx);
    const __m128 vabs = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    const __m128 viw = _mm_set1_ps(iw), vlim = _mm_set1_ps(lim);
    int j = 0;
    for (; j + 4 <= m; j += 4) {
        __m128 v = _mm_loadu_ps(x + j);
        vmn = _mm_min_ps(vmn, v);
        vmx = _mm_max_ps(vmx, v);
        __m128 f = _mm_min_ps(_mm_mul_ps(_mm_and_ps(v, vabs), viw), vlim);
        _mm_storeu_si128((__m128i *)(idx + j), _mm_cvttps_epi32(f));
    }
    float a[4], b[4];
    _mm_storeu_ps(a, vmn);
    _mm_storeu_ps(b, vmx);
    fold_lanes(a, b, 4, pmn, pmx);
    block_c(x + j, m - j, iw, lim, idx + j, pmn, pmx);
}

__attribute__((target("avx512f")))
static void block_avx512(const float *x, int m, float iw, float lim, int32_t *idx, float *pmn, float *pmx) {
    __m512 vmn = _mm512_set1_ps(*pmn), vmx = _mm512_set1_ps(*pmx);
    const __m512 viw = _mm512_set1_ps(iw), vlim = _mm512_set1_ps(lim);
    int j = 0;
    for (; j + 16 <= m; j += 16) {
        __m512 v = _mm512_loadu_ps(x + j);
        vmn = _mm512_min_ps(vmn, v);
        vmx = _mm512_max_ps(vmx, v);
        __m512 f = _mm512_min_ps(_mm512_mul_ps(_mm512_abs_ps(v), viw), vlim);
        _mm512_storeu_si512((void *)(idx + j), _mm512_cvttps_epi32(f));
    }
    float a[16], b[16];
    _mm512_storeu_ps(a, vmn);
    _mm512_storeu_ps(b, vmx);
    fold_lanes(a, b, 16, pmn, pmx);
    block_c(x + j, m - j, iw, lim, idx + j, pmn, pmx);
}
#endif

static block_fn pick_block(void) {
    static block_fn chosen = 0; /* a benign race: every thread picks the same function */
    if (chosen) return chosen;
    block_fn f = block_c;
#ifdef FH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse2")) f = block_sse2;
    if (!getenv("FYEXPORT_NO_AVX512") && __builtin_cpu_supports("avx512f")) f = block_avx512;
#endif
    chosen = f;
    return f;
}

/* Per-thread scratch: SUB sub-histograms, kept all-zero between calls (each call zeroes
 * what it touched while flushing), so a call costs no allocation and no full memset. */
static __thread uint32_t *scratch = 0;
static __thread int64_t scratch_len = 0;

static void flush(uint32_t *h, int64_t stride, int64_t top, int64_t nbins, int64_t *hist, int64_t *over) {
    for (int q = 0; q < SUB; q++) { /* contiguous rows: the compiler vectorises this */
        uint32_t *row = h + q * stride;
        for (int64_t k = 0; k <= top; k++) hist[k] += row[k];
        memset(row, 0, (size_t)(top + 1) * sizeof(uint32_t));
        *over += row[nbins];
        row[nbins] = 0;
    }
}

int64_t abs_hist(const float *x, int64_t n, double inv_width, int64_t nbins, int64_t *hist, float *minmax) {
    const int64_t stride = nbins + 1; /* slot nbins of each sub-histogram collects out-of-range values */
    if (scratch_len < SUB * stride) {
        free(scratch);
        scratch = (uint32_t *)calloc((size_t)(SUB * stride), sizeof(uint32_t));
        scratch_len = scratch ? SUB * stride : 0;
        if (!scratch) return -1;
    }
    uint32_t *h = scratch;
    block_fn block = pick_block();
    const float iw = (float)inv_width, lim = (float)nbins;
    float mn = minmax[0], mx = minmax[1];
    int32_t idx[BLK];
    int64_t over = 0, since_flush = 0;
    for (int64_t i = 0; i < n; i += BLK) {
        int m = n - i < BLK ? (int)(n - i) : BLK;
        block(x + i, m, iw, lim, idx, &mn, &mx);
        const char *ahead = (const char *)(x + i + PREFETCH_AHEAD);
        int j = 0;
        if (i + PREFETCH_AHEAD + BLK <= n) {
            for (; j + SUB <= m; j += SUB) {
                if ((j & 15) == 0) __builtin_prefetch(ahead + 4 * j, 0, 3);
                for (int q = 0; q < SUB; q++) h[q * stride + idx[j + q]]++;
            }
        } else {
            for (; j + SUB <= m; j += SUB)
                for (int q = 0; q < SUB; q++) h[q * stride + idx[j + q]]++;
        }
        for (; j < m; j++) h[idx[j]]++;
        since_flush += m;
        if (since_flush >= (1LL << 31) || i + m >= n) { /* before any uint32 counter can wrap */
            /* Only bins up to the largest |x| can be touched; NaN/Inf (which can also upset
             * the vector min/max) land in the overflow slots, and then everything is flushed. */
            int64_t spilled = 0;
            for (int q = 0; q < SUB; q++) spilled += h[q * stride + nbins];
            float hi = fabsf(mn) > fabsf(mx) ? fabsf(mn) : fabsf(mx);
            float top = hi * iw;
            flush(h, stride, !spilled && top < lim ? (int64_t)top : nbins - 1, nbins, hist, &over);
            since_flush = 0;
        }
    }
    minmax[0] = mn;
    minmax[1] = mx;
    return over;
}

/* A minimal (empty) Python module so setuptools can build and locate this file; the
 * function above is called through ctypes. */
#include <Python.h>
static struct PyModuleDef fasthist_module = {PyModuleDef_HEAD_INIT, "_fasthist", "ctypes helper", -1, NULL};
PyMODINIT_FUNC PyInit__fasthist(void) { return PyModule_Create(&fasthist_module); }
