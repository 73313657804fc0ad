/* Trilinear lookups along rays: gather (forward) and scatter (backward) of flattened grids, for
   sjc_engine/trilinear.py (trilinear_rays). Build: cc -O3 -shared -fPIC -o k.so trilinear.c composite.c -lm
   (sjc_engine/native/build.py does it, and caches the library).

   Grids are planes of M = n^3 values, flat index (i n + j) n + k for the node at (x_i, y_j, z_k). Samples are
   given per ray in voxel index coordinates: sample i of ray r sits at start[r] + i delta[r], i < counts[r].

   Empty-space skipping (sjc_engine/occupancy.py): tri_fwd may take a coarse occupancy bitfield (a sample in an
   empty coarse cell is not looked up) and a transmittance floor (a ray stops once exp(-sum tau) falls below it,
   tau = softplus(raw * scale + shift) * step from the first plane, the density); it then writes a live mask
   (R, k), 1 for every sample looked up. Skipped samples read as zero.

   The typed kernels below are compiled once per element type: this file includes itself with T (float,
   double), SUF (f32, f64), EXP and LOG1P defined, and FN(name) names a kernel name_f32 / name_f64. */
#ifndef SJC_T_TYPED
#define SJC_T_TYPED
#include <math.h>
#include <stdint.h>
#define MAXC 16 /* channels per pass over the samples */
#define FN_CAT(a, b) a##_##b
#define FN_(a, b) FN_CAT(a, b)
#define FN(name) FN_(name, SUF)

#define T float
#define SUF f32
#define EXP expf
#define LOG1P log1pf
#include __FILE__
#undef T
#undef SUF
#undef EXP
#undef LOG1P

#define T double
#define SUF f64
#define EXP exp
#define LOG1P log1p
#include __FILE__
#undef T
#undef SUF
#undef EXP
#undef LOG1P

#else /* typed kernels, T and SUF defined */

#include "corner.h" /* FN(cell_of), FN(corner): a point's cell and trilinear weights */

/* Whether the point x (index coordinates) lies in an occupied coarse cell of the bitfield occ (g^3 cells of
   cell^3 voxels; the voxel as in corner()); NaN points count as occupied (they read NaN). */
static inline int FN(occupied)(const T* x3, int64_t n, const uint8_t* occ, int64_t g, int64_t cell) {
    int64_t c[3];
    if (!FN(cell_of)(x3, n, c)) return 1;
    return occ[((c[0] / cell) * g + c[1] / cell) * g + c[2] / cell];
}

/* Sample i of ray r sits at start[r] + i * delta[r] (index coordinates), for i < counts[r]; the output has the
   dense (R, k) layout, one plane per channel, zero past a ray's end and NaN at NaN points.
   outs[c][r k + i] = sum_q w_q planes[c][corner_q] for rays r in [r0, r1), channels c in [c0, c1), at most
   MAXC of them. Consecutive samples in the same cell (about 40% at half-voxel steps) reuse its corner values.
   With live != NULL the block with decide = 1 (the first, whose plane 0 is the density) decides which samples
   are looked up and writes live (1: looked up; occupancy and transmittance rules above), later blocks follow
   it; skipped samples read as zero. */
static void FN(fwd_block)(const T* start, const T* delta, const int64_t* counts, int64_t r0, int64_t r1,
                          int64_t k, int64_t n, const T* const* planes, int64_t c0, int64_t c1, T* const* outs,
                          const uint8_t* occ, int64_t g, int64_t cell, T scale, T shift, T tstep, T t_stop,
                          uint8_t* live, int decide) {
    const int64_t nn = n * n, C = c1 - c0;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
    const T* pl[MAXC];
    T* ou[MAXC];
    for (int64_t c = 0; c < C; ++c) {
        pl[c] = planes[c0 + c];
        ou[c] = outs[c0 + c];
    }
    T vals[MAXC][8];
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t m = counts[r] < k ? counts[r] : k;
        const T sx = start[3 * r], sy = start[3 * r + 1], sz = start[3 * r + 2];
        const T dx = delta[3 * r], dy = delta[3 * r + 1], dz = delta[3 * r + 2];
        int64_t prev = -1, i = 0;
        T trans = 1;
        for (; i < m; ++i) {
            const int64_t p = r * k + i;
            if (live && !decide && !live[p]) {
                for (int64_t c = 0; c < C; ++c) ou[c][p] = 0;
                continue;
            }
            int64_t b, ijk[3];
            T w[8];
            const T x[3] = {sx + (T)i * dx, sy + (T)i * dy, sz + (T)i * dz};
            if (decide && occ && !FN(occupied)(x, n, occ, g, cell)) {
                for (int64_t c = 0; c < C; ++c) ou[c][p] = 0;
                live[p] = 0;
                continue;
            }
            if (!FN(corner)(x, n, &b, w, ijk)) {
                for (int64_t c = 0; c < C; ++c) ou[c][p] = NAN;
                if (live && decide) live[p] = 1;
                prev = -1;
                continue;
            }
            if (b != prev) {
                for (int64_t c = 0; c < C; ++c)
                    for (int q = 0; q < 8; ++q) vals[c][q] = pl[c][b + o[q]];
                prev = b;
            }
            for (int64_t c = 0; c < C; ++c) {
                T s = 0;
                for (int q = 0; q < 8; ++q) s += w[q] * vals[c][q];
                ou[c][p] = s;
            }
            if (live && decide) {
                live[p] = 1;
                if (t_stop > 0) {
                    const T z = ou[0][p] * scale + shift;
                    const T sigma = z > 20 ? z : LOG1P(EXP(z)); /* softplus, as torch's */
                    trans *= EXP(-sigma * tstep);
                    if (trans < t_stop) { /* every later sample has a weight below t_stop */
                        ++i;
                        break;
                    }
                }
            }
        }
        for (; i < k; ++i) {
            for (int64_t c = 0; c < C; ++c) ou[c][r * k + i] = 0;
            if (live && decide) live[r * k + i] = 0;
        }
    }
}

void FN(tri_fwd)(const T* start, const T* delta, const int64_t* counts, int64_t r0, int64_t r1, int64_t k,
                 int64_t n, const T* const* planes, int64_t C, T* const* outs, const uint8_t* occ, int64_t g,
                 int64_t cell, T scale, T shift, T tstep, T t_stop, uint8_t* live) {
    for (int64_t c0 = 0; c0 < C; c0 += MAXC)
        FN(fwd_block)(start, delta, counts, r0, r1, k, n, planes, c0, c0 + MAXC < C ? c0 + MAXC : C, outs, occ, g,
                      cell, scale, shift, tstep, t_stop, live, c0 == 0);
}

/* grads[c][corner_q] += w_q gs[c][r k + i] for rays r in [r0, r1), samples i < counts[r], channels c in
   [c0, c1). Samples whose gradient is zero on those channels are skipped; consecutive samples in the same
   cell are summed before one scatter of the cell. */
static void FN(bwd_block)(const T* start, const T* delta, const int64_t* counts, int64_t r0, int64_t r1,
                          int64_t k, int64_t n, const T* const* gs, int64_t c0, int64_t c1, T* const* grads) {
    const int64_t nn = n * n, C = c1 - c0;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
    const T* gi[MAXC];
    T* go[MAXC];
    for (int64_t c = 0; c < C; ++c) {
        gi[c] = gs[c0 + c];
        go[c] = grads[c0 + c];
    }
    T acc[MAXC][8];
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t m = counts[r] < k ? counts[r] : k;
        const T sx = start[3 * r], sy = start[3 * r + 1], sz = start[3 * r + 2];
        const T dx = delta[3 * r], dy = delta[3 * r + 1], dz = delta[3 * r + 2];
        int64_t cur = -1;
        for (int64_t i = 0; i <= m; ++i) {
            const int64_t p = r * k + i;
            int64_t b = -1;
            T w[8];
            int live = 0;
            if (i < m) {
                for (int64_t c = 0; c < C; ++c) live |= (gi[c][p] != 0);
                if (live) {
                    const T x[3] = {sx + (T)i * dx, sy + (T)i * dy, sz + (T)i * dz};
                    int64_t ijk[3];
                    live = FN(corner)(x, n, &b, w, ijk);
                }
            }
            if (cur >= 0 && (i == m || (live && b != cur))) { /* flush the cell being summed */
                for (int64_t c = 0; c < C; ++c) {
                    T* G = go[c] + cur;
                    for (int q = 0; q < 8; ++q) G[o[q]] += acc[c][q];
                }
                cur = -1;
            }
            if (!live) continue;
            if (cur < 0) {
                cur = b;
                for (int64_t c = 0; c < C; ++c)
                    for (int q = 0; q < 8; ++q) acc[c][q] = 0;
            }
            for (int64_t c = 0; c < C; ++c) {
                const T v = gi[c][p];
                for (int q = 0; q < 8; ++q) acc[c][q] += w[q] * v;
            }
        }
    }
}

void FN(tri_bwd)(const T* start, const T* delta, const int64_t* counts, int64_t r0, int64_t r1, int64_t k,
                 int64_t n, const T* const* gs, int64_t c0, int64_t c1, T* const* grads) {
    for (int64_t a = c0; a < c1; a += MAXC)
        FN(bwd_block)(start, delta, counts, r0, r1, k, n, gs, a, a + MAXC < c1 ? a + MAXC : c1, grads);
}

#endif
