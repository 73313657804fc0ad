/* The smoothness loss of sjc_engine/losses.py (a discrete Dirichlet energy of a grid) with its gradient, in one
   pass. Build with the other kernels. (The emptiness loss is made by march.c, from each ray's weighted samples.)

   The typed kernels below are compiled once per element type: this file includes itself with T (float, double)
   and SUF (f32, f64) defined, and FN(name) names a kernel name_f32 / name_f64. */
#ifndef SJC_G_TYPED
#define SJC_G_TYPED
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#define FN_CAT(a, b) a##_##b
#define FN_(a, b) FN_CAT(a, b)
#define FN(name) FN_(name, SUF)
#define SJC_MIN(a, b) ((a) < (b) ? (a) : (b))

#define T float
#define SUF f32
#include __FILE__
#undef T
#undef SUF

#define T double
#define SUF f64
#include __FILE__
#undef T
#undef SUF

#else /* typed kernels */

/* Smoothness of B grids g (B, n, n, n): returns sum over the three axes of mean((g[i+1] - g[i])^2) (each mean
   over the B (n - 1) n^2 differences along that axis), and writes its gradient into grad (B, n, n, n):
   grad[x] = c sum_axes ([i > 0] (x - x_prev) + [i < n - 1] (x - x_next)), c = 2 / (B (n - 1) n^2). n >= 2.
   Only the slabs i in [i0, i1) of the first axis: their gradient, and their part of the sum (the differences with
   their next neighbours), so two threads can take one range each. */
double FN(smooth_fwd)(const T* g, int64_t B, int64_t n, int64_t i0, int64_t i1, T* grad) {
    const int64_t nn = n * n;
    const T c = (T)(2.0 / ((double)B * (double)(n - 1) * (double)nn));
    double total = 0;
    for (int64_t b = 0; b < B; ++b) {
        const T* gb = g + b * nn * n;
        T* ob = grad + b * nn * n;
        for (int64_t i = i0; i < i1; ++i)
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

/* A row's weighted differences with the nodes `off` elements ahead (the next row or slab): out -= e, sq += e d
   with d the difference and e = min of the two weights times d. */
static inline void FN(wnext)(const T* row, const T* wr, int64_t off, int64_t n, T* out, T* sq) {
    for (int64_t k = 0; k < n; ++k) {
        const T d = row[k + off] - row[k], e = SJC_MIN(wr[k], wr[k + off]) * d;
        out[k] -= e;
        sq[k] += e * d;
    }
}

/* ... and with the nodes `off` elements behind: out += e (their squares are counted from the other side). */
static inline void FN(wprev)(const T* row, const T* wr, int64_t off, int64_t n, T* out) {
    for (int64_t k = 0; k < n; ++k) out[k] += SJC_MIN(wr[k], wr[k - off]) * (row[k] - row[k - off]);
}

/* The same with each difference weighted by the smaller of its two nodes' weights w (n, n, n), shared by the B
   grids: returns sum over the axes of mean(min(w[i], w[i+1]) (g[i+1] - g[i])^2) and writes its gradient,
   grad[x] = c sum over x's neighbours of min(w[x], w[nb]) (x - nb). The same slabs [i0, i1) as smooth_fwd.
   Each row is done axis by axis in loops without branches (they vectorise); a row's weighted differences along
   its own axis go through a buffer, the squares into per-column sums added up once per row. */
double FN(wsmooth_fwd)(const T* g, const T* w, int64_t B, int64_t n, int64_t i0, int64_t i1, T* grad) {
    const int64_t nn = n * n;
    const T c = (T)(2.0 / ((double)B * (double)(n - 1) * (double)nn));
    double total = 0;
    T ez[n], sq[n];
    for (int64_t b = 0; b < B; ++b) {
        const T* gb = g + b * nn * n;
        T* ob = grad + b * nn * n;
        for (int64_t i = i0; i < i1; ++i)
            for (int64_t j = 0; j < n; ++j) {
                const int64_t at = (i * n + j) * n;
                const T* row = gb + at;
                const T* wr = w + at;
                T* out = ob + at;
                for (int64_t k = 0; k < n - 1; ++k) { /* along the row: to the next node */
                    const T d = row[k + 1] - row[k];
                    ez[k] = SJC_MIN(wr[k], wr[k + 1]) * d;
                    sq[k] = ez[k] * d;
                }
                ez[n - 1] = 0;
                sq[n - 1] = 0;
                out[0] = -ez[0];
                for (int64_t k = 1; k < n; ++k) out[k] = ez[k - 1] - ez[k];
                if (i < n - 1) FN(wnext)(row, wr, nn, n, out, sq); /* the next slab */
                if (i > 0) FN(wprev)(row, wr, nn, n, out);
                if (j < n - 1) FN(wnext)(row, wr, n, n, out, sq); /* the next row */
                if (j > 0) FN(wprev)(row, wr, n, n, out);
                double s = 0;
                for (int64_t k = 0; k < n; ++k) {
                    out[k] *= c;
                    s += (double)sq[k];
                }
                total += s;
            }
    }
    return total * (double)c / 2;
}

#endif
