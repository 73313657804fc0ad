/* Volume compositing of rays, forward and analytic backward, for sjc_engine/composite.py (composite). Build
   with trilinear.c: cc -O3 -shared -fPIC -o k.so trilinear.c composite.c -lm.

   Rays are in the dense (R, k) layout: sample i of ray r at p = r k + i, at distance t0[r] + i step, for
   i < counts[r]; past a ray's end outputs are zero.

   The typed kernels below are compiled once per element type: this file includes itself with T (float,
   double), EXPM1 (expm1f, expm1) and SUF (f32, f64) defined, and FN(name) names a kernel name_f32 / name_f64. */
#ifndef SJC_C_TYPED
#define SJC_C_TYPED
#include <math.h>
#include <stdint.h>
#define FN_CAT(a, b) a##_##b
#define FN_(a, b) FN_CAT(a, b)
#define FN(name) FN_(name, SUF)

#define T float
#define EXPM1 expm1f
#define SUF f32
#include __FILE__
#undef T
#undef EXPM1
#undef SUF

#define T double
#define EXPM1 expm1
#define SUF f64
#include __FILE__
#undef T
#undef EXPM1
#undef SUF

#else /* typed kernels, T, EXPM1 and SUF defined */

/* Volume compositing of rays r in [r0, r1) (used by the renderer): tau (R, k) optical thickness, feats C planes
   (R, k), sample i of ray r at distance t0[r] + i * step, i < counts[r]. Writes w (R, k) = (1 - e^-tau_i) T_i
   with T_i = exp(-sum_{j<i} tau_j) (zero past the end), rgb (R, C) = sum_i [w_i >= thr] w_i f_i,
   opacity (R,) = 1 - exp(-sum tau), depth (R,) = sum_i w_i t_i. */
void FN(comp_fwd)(const T* tau, const T* const* feats, int64_t C, const T* t0, T step, const int64_t* counts,
                  int64_t r0, int64_t r1, int64_t k, T thr, T* w, T* rgb, T* opacity, T* depth) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t m = counts[r] < k ? counts[r] : k;
        const T* tr = tau + r * k;
        T* wr = w + r * k;
        T trans = 1, dep = 0; /* trans = T_i, a running product: one transcendental per sample */
        for (int64_t c = 0; c < C; ++c) rgb[r * C + c] = 0;
        for (int64_t i = 0; i < m; ++i) {
            if (tr[i] == 0) { /* a skipped sample (empty space, past a stopped ray): no weight, no transcendental */
                wr[i] = 0;
                continue;
            }
            const T em = EXPM1(-tr[i]); /* e^-tau - 1, exact for small tau */
            const T wi = -em * trans;
            trans += em * trans;
            wr[i] = wi;
            dep += wi * (t0[r] + (T)i * step);
            if (wi >= thr)
                for (int64_t c = 0; c < C; ++c) rgb[r * C + c] += wi * feats[c][r * k + i];
        }
        for (int64_t i = m; i < k; ++i) wr[i] = 0;
        opacity[r] = 1 - trans;
        depth[r] = dep;
    }
}

/* Backward of comp_fwd: with a_i = g_w_i + [w_i >= thr] <g_rgb, f_i> + g_depth t_i,
   g_tau_j = a_j T_{j+1} - sum_{i>j} a_i w_i + g_opacity T_end, g_feats[c]_i = [w_i >= thr] w_i g_rgb_c.
   g_w may be NULL (no gradient on the weights). g_tau holds T_{j+1} in between. Samples with tau = 0 exactly
   (skipped by the lookup, or past the end) get g_tau = 0: their thickness is masked to zero, so nothing flows
   there, and they add nothing to the others' terms (w = 0). */
void FN(comp_bwd)(const T* tau, const T* const* feats, int64_t C, const T* t0, T step, const int64_t* counts,
                  int64_t r0, int64_t r1, int64_t k, T thr, const T* w, const T* g_w, const T* g_rgb,
                  const T* g_op, const T* g_depth, T* g_tau, T* const* g_feats) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t m = counts[r] < k ? counts[r] : k;
        const T* tr = tau + r * k;
        const T* wr = w + r * k;
        T* gt = g_tau + r * k;
        T trans = 1;
        for (int64_t i = 0; i < m; ++i) {
            if (tr[i] != 0) trans += EXPM1(-tr[i]) * trans;
            gt[i] = trans; /* T_{i+1}, as in comp_fwd */
        }
        const T t_end = trans;
        T suffix = 0;
        for (int64_t j = m - 1; j >= 0; --j) {
            const int64_t p = r * k + j;
            if (tr[j] == 0) { /* a skipped sample: no weight, and its thickness is masked out (no gradient) */
                gt[j] = 0;
                for (int64_t c = 0; c < C; ++c) g_feats[c][p] = 0;
                continue;
            }
            const int keep = wr[j] >= thr;
            T a = (g_w ? g_w[p] : 0) + g_depth[r] * (t0[r] + (T)j * step);
            for (int64_t c = 0; c < C; ++c) {
                const T gfc = keep ? wr[j] * g_rgb[r * C + c] : 0;
                g_feats[c][p] = gfc;
                if (keep) a += g_rgb[r * C + c] * feats[c][p];
            }
            gt[j] = a * gt[j] - suffix + g_op[r] * t_end;
            suffix += a * wr[j];
        }
        for (int64_t i = m; i < k; ++i) {
            gt[i] = 0;
            for (int64_t c = 0; c < C; ++c) g_feats[c][r * k + i] = 0;
        }
    }
}

#endif
