/* A batch of rays clipped to the field's box and laid out as the march's samples, for sjc_engine/renderer.py
   (render_rays): its torch ops (ray_box, the sample counts, the hit rays' first sample and step in index
   coordinates) in one pass, in the same float arithmetic and order, so the same bits (tests/engine/test_renderer.py).
   Every product and sum is rounded on its own (no fused multiply-add), as in torch's elementwise kernels.

   The typed kernels below are compiled once per element type: this file includes itself with T (float, double),
   CEIL and SUF (f32, f64) defined, and FN(name) names a kernel name_f32 / name_f64. */
#pragma GCC optimize("fp-contract=off")
#ifndef SJC_R_TYPED
#define SJC_R_TYPED
#include <math.h>
#include <stdint.h>
#define FN_CAT(a, b) a##_##b
#define FN_(a, b) FN_CAT(a, b)
#define FN(name) FN_(name, SUF)

#define T float
#define CEIL ceilf
#define SUF f32
#include __FILE__
#undef T
#undef CEIL
#undef SUF

#define T double
#define CEIL ceil
#define SUF f64
#include __FILE__
#undef T
#undef CEIL
#undef SUF

#else /* typed kernels */

/* NaN-propagating min and max (torch.minimum / torch.maximum, amin / amax). */
static inline T FN(r_min)(T a, T b) { return a != a || b != b ? (T)NAN : (a < b ? a : b); }
static inline T FN(r_max)(T a, T b) { return a != a || b != b ? (T)NAN : (a > b ? a : b); }

/* Rays r < R (origins o and directions d, (R, 3)) through the box [-bbox, bbox]^3 with samples every `step`:
   t_min = max over axes of min(t0, t1) clipped at 0 and t_max = min over axes of max(t0, t1), t0/1 = (-/+bbox - o)
   / d (d below 1e-9 in size taken as 1e-9), count = ceil((t_max - t_min) / step) (0 for a NaN or a negative).
   The n rays with count > 0 (returned) are written in order: hit[j] (the ray's index), counts[j], t0[j] (t_min),
   start[j] = (o + t_min d + bbox) scale and delta[j] = d step_scale (index coordinates; step_scale = step scale
   rounded once, as the caller's Python product). */
int64_t FN(ray_setup)(const T* o, const T* d, int64_t R, T bbox, T step, T scale, T step_scale, int64_t* hit,
                      int64_t* counts, T* t0, T* start, T* delta) {
    int64_t n = 0;
    for (int64_t r = 0; r < R; ++r) {
        const T* orr = o + 3 * r;
        const T* dr = d + 3 * r;
        T lo = 0, hi = 0;
        for (int a = 0; a < 3; ++a) {
            const T safe = fabs(dr[a]) < (T)1e-9 ? (T)1e-9 : dr[a];
            const T ta = (-bbox - orr[a]) / safe, tb = (bbox - orr[a]) / safe;
            const T mn = FN(r_min)(ta, tb), mx = FN(r_max)(ta, tb);
            lo = a ? FN(r_max)(lo, mn) : mn;
            hi = a ? FN(r_min)(hi, mx) : mx;
        }
        lo = lo != lo ? lo : (lo < 0 ? 0 : lo); /* clamp(min=0), NaN kept */
        const T c = CEIL((hi - lo) / step);
        if (!(c > 0)) continue; /* NaN, or no sample inside the box */
        hit[n] = r;
        counts[n] = (int64_t)c;
        t0[n] = lo;
        for (int a = 0; a < 3; ++a) {
            start[3 * n + a] = (orr[a] + lo * dr[a] + bbox) * scale;
            delta[3 * n + a] = dr[a] * step_scale;
        }
        ++n;
    }
    return n;
}

#endif
