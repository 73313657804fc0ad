/* The field's background texture looked up by ray direction, with its gradient, for sjc_engine/background.py:
   the torch path's dozen small ops (angles, a padded copy of the texture, grid_sample and their backwards: about
   0.6 ms of a 64^3 step with 1024 rays) in one pass over the rays. Build with the other kernels.

   A direction d = (x, y, z) reads the texture tex (C, res, res) at row polar * res - 0.5 (clamped to the rows)
   and column azimuth * res - 0.5 (wrapping around), polar = acos(y) / pi in [0, 1] and azimuth =
   (atan2(x, z) / (2 pi)) mod 1: bilinear between the texel centres, as the torch path's grid_sample over the
   texture padded with its last column before the first and its first after the last.

   The typed kernels below are compiled once per element type: this file includes itself with T (float, double),
   ACOS, ATAN2, FLOOR, TANH and SUF (f32, f64) defined, and FN(name) names a kernel name_f32 / name_f64. */
#ifndef SJC_B_TYPED
#define SJC_B_TYPED
/* no FP traps are enabled, so the branch-free angle loop below may evaluate both sides of a select (and divide
   by zero there), and the library is built with -fno-math-errno (a square root without a call): that lets the
   compiler vectorise it */
#pragma GCC optimize("no-trapping-math")
#include <math.h>
#include <stdint.h>
#define FN_CAT(a, b) a##_##b
#define FN_(a, b) FN_CAT(a, b)
#define FN(name) FN_(name, SUF)
#define B_CHUNK 256 /* rays whose angles are made in one (vectorised) loop */

/* atan2(y, x) for float, branch-free (the compiler vectorises a loop of it): Cephes' atanf on min/max of |x|,
   |y|, then the octant (within 3e-7 rad of the double atan2 on 2M random points, float rounding included);
   atan2(0, 0) = 0. */
static inline float b_atan2f(float y, float x) {
    const float ax = fabsf(x), ay = fabsf(y), mx = ax > ay ? ax : ay, mn = ax > ay ? ay : ax;
    const float t = mx > 0 ? mn / mx : 0; /* in [0, 1] */
    const int mid = t > 0.41421356237f;   /* tan(pi / 8): reduce by pi / 4 */
    const float u = mid ? (t - 1) / (t + 1) : t, z = u * u;
    float a = ((((8.05374449538e-2f * z - 1.38776856032e-1f) * z + 1.99777106478e-1f) * z - 3.33329491539e-1f) *
                   z * u + u);
    a = mid ? a + 0.78539816340f : a;
    a = ay > ax ? 1.57079632679f - a : a;
    a = x < 0 ? 3.14159265359f - a : a;
    return y < 0 ? -a : a;
}

#define T float
#define ANGLES(y, x) b_atan2f(y, x)
#define FLOOR floorf
#define SQRT sqrtf
#define TANH tanhf
#define SUF f32
#include __FILE__
#undef T
#undef ANGLES
#undef FLOOR
#undef SQRT
#undef TANH
#undef SUF

#define T double
#define ANGLES(y, x) atan2(y, x)
#define FLOOR floor
#define SQRT sqrt
#define TANH tanh
#define SUF f64
#include __FILE__
#undef T
#undef ANGLES
#undef FLOOR
#undef SQRT
#undef TANH
#undef SUF

#else /* typed kernels */

/* The texture coordinates of directions dirs[0 .. nr) (3 each): column col[r] of the texture padded with its
   last column before the first (texel centres at 1 .. res), row row[r] (texel centres at 0 .. res - 1, clamped);
   both NaN for a direction with a NaN. acos(y) = atan2(sqrt((1 - y) (1 + y)), y). */
static inline void FN(bg_coords)(const T* dirs, int64_t nr, int64_t res, T* col, T* row) {
    const T pi = (T)3.14159265358979323846;
    for (int64_t r = 0; r < nr; ++r) {
        const T* d = dirs + 3 * r;
        const T y = d[1] < -1 ? (T)-1 : (d[1] > 1 ? (T)1 : d[1]);
        const T azim = ANGLES(d[0], d[2]) / (2 * pi);
        const T polar = ANGLES(SQRT((1 - y) * (1 + y)), y) / pi;
        const T a = azim - FLOOR(azim); /* torch's remainder: in [0, 1] (1 where a tiny negative rounds up) */
        const T c = a * (T)res + (T)0.5, w = polar * (T)res - (T)0.5;
        const T wc = w < 0 ? 0 : (w > (T)(res - 1) ? (T)(res - 1) : w);
        const int nan = (d[0] != d[0]) | (d[1] != d[1]) | (d[2] != d[2]);
        col[r] = nan ? (T)NAN : (c > (T)(res + 1) ? (T)(res + 1) : c);
        row[r] = nan ? (T)NAN : wc;
    }
}

/* The 4 texels (flat indices into a (res, res) plane) and bilinear weights of texture coordinates (col, row);
   0 for NaN ones (then texel 0 with weight 0, four times). On the last padded column or the last row the point's
   fraction is 0, so the next column or row (clamped, to stay in the plane) gets weight 0. */
static inline int FN(bg_taps)(T col, T row, int64_t res, int64_t idx[4], T wt[4]) {
    if (col != col || row != row) {
        for (int q = 0; q < 4; ++q) idx[q] = 0, wt[q] = 0;
        return 0;
    }
    const T x0 = FLOOR(col), y0 = FLOOR(row), fx = col - x0, fy = row - y0;
    const int64_t px0 = (int64_t)x0, py0 = (int64_t)y0;
    const int64_t px1 = px0 + 1 > res + 1 ? px0 : px0 + 1, py1 = py0 + 1 > res - 1 ? py0 : py0 + 1;
    /* padded column -> texture column: 0 -> res - 1, 1 .. res -> 0 .. res - 1, res + 1 -> 0 */
    const int64_t c0 = px0 == 0 ? res - 1 : (px0 > res ? 0 : px0 - 1), c1 = px1 > res ? 0 : px1 - 1;
    idx[0] = py0 * res + c0;
    idx[1] = py0 * res + c1;
    idx[2] = py1 * res + c0;
    idx[3] = py1 * res + c1;
    wt[0] = (1 - fx) * (1 - fy);
    wt[1] = fx * (1 - fy);
    wt[2] = (1 - fx) * fy;
    wt[3] = fx * fy;
    return 1;
}

/* The taps of the nr (<= B_CHUNK) directions dirs (nr, 3): ok[k] 0 for a NaN direction, else its texels idx[k] and
   weights wt[k] (bg_coords for all of them, then bg_taps for each). */
static inline void FN(bg_chunk)(const T* dirs, int64_t nr, int64_t res, int32_t* ok, int64_t (*idx)[4], T (*wt)[4]) {
    T col[B_CHUNK], row[B_CHUNK];
    FN(bg_coords)(dirs, nr, res, col, row);
    for (int64_t k = 0; k < nr; ++k) ok[k] = FN(bg_taps)(col[k], row[k], res, idx[k], wt[k]);
}

/* out (R, C): the background of directions dirs (R, 3) in the texture tex (C, res, res), through tanh where
   tanh_act is 1; NaN for a NaN direction. */
void FN(bg_fwd)(const T* dirs, int64_t R, const T* tex, int64_t C, int64_t res, int64_t tanh_act, T* out) {
    const int64_t plane = res * res;
    int32_t ok[B_CHUNK];
    int64_t idx[B_CHUNK][4];
    T wt[B_CHUNK][4];
    for (int64_t r0 = 0; r0 < R; r0 += B_CHUNK) {
        const int64_t nr = R - r0 < B_CHUNK ? R - r0 : B_CHUNK;
        FN(bg_chunk)(dirs + 3 * r0, nr, res, ok, idx, wt);
        for (int64_t k = 0; k < nr; ++k) {
            T* o = out + (r0 + k) * C;
            for (int64_t c = 0; c < C; ++c) {
                const T* p = tex + c * plane;
                const int64_t* i = idx[k];
                const T v = (wt[k][0] * p[i[0]] + wt[k][1] * p[i[1]]) + (wt[k][2] * p[i[2]] + wt[k][3] * p[i[3]]);
                o[c] = !ok[k] ? (T)NAN : (tanh_act ? TANH(v) : v);
            }
        }
    }
}

/* Adds the texture's gradient into g_tex (C, res, res) given the output's gradient g_out (R, C) and, with
   tanh_act, the output out (R, C) itself (tanh' = 1 - out^2). NaN directions add nothing. */
void FN(bg_bwd)(const T* dirs, int64_t R, int64_t C, int64_t res, int64_t tanh_act, const T* out, const T* g_out,
                T* g_tex) {
    const int64_t plane = res * res;
    int32_t ok[B_CHUNK];
    int64_t idx[B_CHUNK][4];
    T wt[B_CHUNK][4];
    for (int64_t r0 = 0; r0 < R; r0 += B_CHUNK) {
        const int64_t nr = R - r0 < B_CHUNK ? R - r0 : B_CHUNK;
        FN(bg_chunk)(dirs + 3 * r0, nr, res, ok, idx, wt);
        for (int64_t k = 0; k < nr; ++k) {
            const int64_t r = r0 + k;
            for (int64_t c = 0; c < C && ok[k]; ++c) {
                T g = g_out[r * C + c];
                if (tanh_act) g *= 1 - out[r * C + c] * out[r * C + c];
                T* p = g_tex + c * plane;
                for (int q = 0; q < 4; ++q) p[idx[k][q]] += g * wt[k][q];
            }
        }
    }
}

#endif
