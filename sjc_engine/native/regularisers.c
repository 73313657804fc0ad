/* The field's regularisers with their gradients, one pass each, for sjc_engine/losses.py: the smoothness loss
   (a discrete Dirichlet energy of a grid) and the emptiness loss (a mean of log(1 + scale w) over compositing
   weights). Build with the other kernels.

   The typed kernels below are compiled once per element type: this file includes itself with T (float, double),
   LOG1P and SUF (f32, f64) defined, and FN(name) names a kernel name_f32 / name_f64. */
#ifndef SJC_G_TYPED
#define SJC_G_TYPED
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#define FN_CAT(a, b) a##_##b
#define FN_(a, b) FN_CAT(a, b)
#define FN(name) FN_(name, SUF)
#define EBLOCK 256 /* weights whose log1p is taken at once (vectorised) before they are summed */

/* no FP traps are enabled, so the branch-free loops below may evaluate both sides of a select */
#pragma GCC optimize("no-trapping-math")

/* log(1 + x) for float x >= 0 (finite) in plain arithmetic, branch-free so loops over it vectorise: u = 1 + x
   rounded, log u from its exponent and mantissa (m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m - 1) / (m + 1)) by
   its odd series to the 11th power, remainder < 1e-10 relative), times x / (u - 1) for the rounding of 1 + x
   (x itself where u == 1); within a few float ulps of log1pf. */
static inline float m_log1pf(float x) {
    const float u = 1.0f + x;
    union {
        float f;
        int32_t i;
    } v = {u};
    int32_t e = ((v.i >> 23) & 0xff) - 127;
    v.i = (v.i & 0x007fffff) | 0x3f800000; /* the mantissa, in [1, 2) */
    float m = v.f;
    const int32_t big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e += big;
    const float r = (m - 1.0f) / (m + 1.0f), r2 = r * r;
    float p = 1.0f / 11;
    p = p * r2 + 1.0f / 9;
    p = p * r2 + 1.0f / 7;
    p = p * r2 + 1.0f / 5;
    p = p * r2 + 1.0f / 3;
    p = p * r2 + 1.0f;
    const float lu = (float)e * 0.693147180559945309f + 2.0f * r * p;
    return u == 1.0f ? x : lu * (x / (u - 1.0f));
}

#define T float
#define LOG1P m_log1pf
#define SUF f32
#include __FILE__
#undef T
#undef LOG1P
#undef SUF

#define T double
#define LOG1P log1p
#define SUF f64
#include __FILE__
#undef T
#undef LOG1P
#undef SUF

#else /* typed kernels */

/* Smoothness of B grids g (B, n, n, n): returns sum over the three axes of mean((g[i+1] - g[i])^2) (each mean
   over the B (n - 1) n^2 differences along that axis), and writes its gradient into grad (B, n, n, n):
   grad[x] = c sum_axes ([i > 0] (x - x_prev) + [i < n - 1] (x - x_next)), c = 2 / (B (n - 1) n^2). n >= 2. */
double FN(smooth_fwd)(const T* g, int64_t B, int64_t n, T* grad) {
    const int64_t nn = n * n;
    const T c = (T)(2.0 / ((double)B * (double)(n - 1) * (double)nn));
    double total = 0;
    for (int64_t b = 0; b < B; ++b) {
        const T* gb = g + b * nn * n;
        T* ob = grad + b * nn * n;
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < n; ++j) {
                const T* row = gb + (i * n + j) * n;
                const T* xp = i > 0 ? row - nn : NULL;
                const T* xn = i < n - 1 ? row + nn : NULL;
                const T* yp = j > 0 ? row - n : NULL;
                const T* yn = j < n - 1 ? row + n : NULL;
                T* out = ob + (i * n + j) * n;
                double s = 0; /* the row's squared differences with its next neighbours */
                for (int64_t k = 0; k < n; ++k) {
                    const T x = row[k];
                    T acc = 0;
                    if (xp) acc += x - xp[k];
                    if (xn) {
                        const T dx = xn[k] - x;
                        acc -= dx;
                        s += (double)(dx * dx);
                    }
                    if (yp) acc += x - yp[k];
                    if (yn) {
                        const T dy = yn[k] - x;
                        acc -= dy;
                        s += (double)(dy * dy);
                    }
                    if (k > 0) acc += x - row[k - 1];
                    if (k < n - 1) {
                        const T dz = row[k + 1] - x;
                        acc -= dz;
                        s += (double)(dz * dz);
                    }
                    out[k] = c * acc;
                }
                total += s;
            }
    }
    return total * (double)c / 2; /* each axis has the same count of differences */
}

/* Emptiness of V views of a dense (rows, K) weights layout w: view v is rows [r0[v], r0[v] + nr[v]), columns
   [0, nk[v]); loss[v] = mean over its nr nk entries of log(1 + scale w) (weights >= 0; a view with no entry gets
   0). */
void FN(empty_fwd)(const T* w, int64_t K, int64_t V, const int64_t* r0, const int64_t* nr, const int64_t* nk,
                   T scale, double* loss) {
    T buf[EBLOCK];
    for (int64_t v = 0; v < V; ++v) {
        double s[4] = {0, 0, 0, 0}; /* partial sums (four chains of adds, not one) */
        for (int64_t r = r0[v]; r < r0[v] + nr[v]; ++r) {
            const T* row = w + r * K;
            for (int64_t k0 = 0; k0 < nk[v]; k0 += EBLOCK) {
                const int64_t nb = nk[v] - k0 < EBLOCK ? nk[v] - k0 : EBLOCK;
                for (int64_t k = 0; k < nb; ++k) buf[k] = LOG1P(scale * row[k0 + k]); /* vectorised for float */
                for (int64_t k = 0; k < nb; ++k) s[k & 3] += (double)buf[k];
            }
        }
        const double count = (double)nr[v] * (double)nk[v];
        loss[v] = count > 0 ? ((s[0] + s[1]) + (s[2] + s[3])) / count : 0;
    }
}

/* The gradient of sum_v g_loss[v] loss[v] (empty_fwd) in w, into grad (rows, K), which it fills: scale g_loss[v] /
   (count_v (1 + scale w)) inside view v's block, 0 elsewhere. */
void FN(empty_bwd)(const T* w, int64_t rows, int64_t K, int64_t V, const int64_t* r0, const int64_t* nr,
                   const int64_t* nk, T scale, const double* g_loss, T* grad) {
    for (int64_t i = 0; i < rows * K; ++i) grad[i] = 0;
    for (int64_t v = 0; v < V; ++v) {
        const double count = (double)nr[v] * (double)nk[v];
        if (count == 0) continue;
        const T c = (T)((double)scale * g_loss[v] / count);
        for (int64_t r = r0[v]; r < r0[v] + nr[v]; ++r) {
            const T* row = w + r * K;
            T* out = grad + r * K;
            for (int64_t k = 0; k < nk[v]; ++k) out[k] = c / (1 + scale * row[k]);
        }
    }
}

#endif
