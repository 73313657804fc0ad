/* Fused volume rendering of a ray batch through a voxel field, forward and analytic backward, for
   sjc_engine/march.py (render_hit_rays). Build with the other kernels: cc -O3 -shared -fPIC -o k.so *.c -lm
   (sjc_engine/native/build.py does it, and caches the library).

   Per ray, one pass over its samples does what the torch path does in a dozen dense (rays x samples) ops:
   march, skip samples in empty coarse cells (occupancy bits), trilinear lookup of the raw density,
   sigma = softplus(raw * scale + shift), tau = sigma * step, compositing w_i = (1 - e^-tau_i) T_i with
   T_{i+1} = T_i - w_i, stop once T < t_stop (with an occupancy grid), features looked up, activated
   (identity or tanh) and composited only where w_i >= thr (so none past the stop), the background blend, and on
   request the ray's emptiness sum (sum_i log(1 + s w_i)). The backward walks each ray twice (forward: T_{i+1} and
   a_i; reverse: g_tau), then once more to scatter straight into the grids' gradients.
   Kernels: march_fwd, march_bwd; march_order (a cache-friendly order to walk the rays in) and march_range
   (OccupancyGrid.sample_range: each ray's samples that can meet the occupied cells' bounding box).

   Geometry (as sjc_engine/renderer.py): hit ray j (j < n) is ray ray[j] of the batch; its sample i (i < kept[j])
   sits at start[j] + i delta[j] in voxel index coordinates and at distance t0[j] + i step, and its weight goes
   to w[j K + first[j] + i] of the dense (n, K) weights (zero elsewhere). Grids are planes of n^3 values, flat
   index (x n + y) n + z. Samples are clamped into the grid as in trilinear.c.

   The typed kernels below are compiled once per element type: this file includes itself with T (float,
   double), SUF (f32, f64), FAST_FLOAT, EXP, EXPM1, LOG1P, TANH and LOG1PV (m_log1pf for float) defined, and
   FN(name) names a kernel name_f32 / name_f64. */
#ifndef SJC_M_TYPED
#define SJC_M_TYPED
/* no FP traps are enabled, so the branch-free blocks below may evaluate both sides of a select: that lets
   the compiler vectorise them (results are the same) */
#pragma GCC optimize("no-trapping-math")
#include <math.h>
#include <stdint.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>
#include "log1p.h" /* m_log1pf */
#define MAXC 16 /* feature channels */
#define FN_CAT(a, b) a##_##b
#define FN_(a, b) FN_CAT(a, b)
#define FN(name) FN_(name, SUF)
#define MARCH_DENSITY 1  /* march_bwd: the density path (compositing backward, density and d_scale gradients) */
#define BLOCK 64       /* live samples looked up before they are composited */
#define MARCH_FEATURES 2 /* march_bwd: the feature gradients */

int march_max_channels(void) { return MAXC; }

/* Whether march_fwd and march_bwd read and write node records (aos, g_aos in field_t): a float build with AVX2 and
   FMA. */
int march_aos(void) {
#if defined(__AVX2__) && defined(__FMA__)
    return 1;
#else
    return 0;
#endif
}

/* Prefetches the lines of the node records (4 floats a node) of the cell at base: 4 pairs of 32 bytes, which may
   each straddle two lines. */
static inline void m_prefetch_records(const float* aos, int64_t base, const int64_t* o, int write) {
    for (int q = 0; q < 8; q += 2) {
        const float* a = aos + 4 * (base + o[q]);
        if (write) {
            __builtin_prefetch(a, 1);
            __builtin_prefetch(a + 7, 1);
        } else {
            __builtin_prefetch(a, 0);
            __builtin_prefetch(a + 7, 0);
        }
    }
}

/* The nodes of box (lo[3], hi[3], inclusive node indices per axis) of an n^3 grid, as runs along z: calls
   body(i, len) for each run's first flat index. */
#define M_BOX_RUNS(n, box, body)                                                                                   \
    for (int64_t x = (box)[0]; x <= (box)[3]; ++x)                                                                 \
        for (int64_t y = (box)[1]; y <= (box)[4]; ++y) {                                                           \
            const int64_t i0 = (x * (n) + y) * (n) + (box)[2], len = (box)[5] - (box)[2] + 1;                      \
            body(i0, len);                                                                                         \
        }

/* The node records out (n^3, 4) of the density plane d and the 3 feature planes f[c] (each n^3 floats), over the
   nodes of box (lo[3], hi[3], inclusive; the records elsewhere are left as they are). */
void march_pack(const float* d, const float* const* f, int64_t n, const int64_t* box, float* out) {
#define PACK_RUN(i0, len)                                                                                          \
    {                                                                                                              \
        int64_t i = i0;                                                                                            \
        PACK_VECTOR(i0, len)                                                                                       \
        for (; i < i0 + len; ++i) {                                                                                \
            out[4 * i] = d[i];                                                                                     \
            for (int c = 0; c < 3; ++c) out[4 * i + 1 + c] = f[c][i];                                              \
        }                                                                                                          \
    }
#if defined(__AVX__)
#define PACK_VECTOR(i0, len)                                                                                       \
    for (; i + 8 <= i0 + len; i += 8) { /* 8 nodes: a 4 x 8 transpose */                                          \
        const __m256 a = _mm256_loadu_ps(d + i), b = _mm256_loadu_ps(f[0] + i);                                    \
        const __m256 c = _mm256_loadu_ps(f[1] + i), e = _mm256_loadu_ps(f[2] + i);                                 \
        const __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);                                 \
        const __m256 t2 = _mm256_unpacklo_ps(c, e), t3 = _mm256_unpackhi_ps(c, e);                                 \
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);                   \
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);                   \
        _mm256_storeu_ps(out + 4 * i, _mm256_permute2f128_ps(u0, u1, 0x20));                                       \
        _mm256_storeu_ps(out + 4 * i + 8, _mm256_permute2f128_ps(u2, u3, 0x20));                                   \
        _mm256_storeu_ps(out + 4 * i + 16, _mm256_permute2f128_ps(u0, u1, 0x31));                                  \
        _mm256_storeu_ps(out + 4 * i + 24, _mm256_permute2f128_ps(u2, u3, 0x31));                                  \
    }
#else
#define PACK_VECTOR(i0, len)
#endif
    M_BOX_RUNS(n, box, PACK_RUN)
#undef PACK_VECTOR
#undef PACK_RUN
}

/* The gradients in node records a (n^3, 4; plus those of b where b is not NULL: a + b) over the nodes of box (as
   march_pack's) into the density plane gd and the 3 feature planes gf[c] (n^3 each), zero outside the box (where a
   backward scatters nothing), in one pass; a's and b's records in the box are zeroed (ready for the next backward). */
void march_unpack(float* a, float* b, int64_t n, const int64_t* box, float* gd, float* const* gf) {
    float* const planes[4] = {gd, gf[0], gf[1], gf[2]};
    const int64_t z0 = box[2], z1 = box[5] + 1; /* the box's z run [z0, z1) */
    for (int64_t x = 0; x < n; ++x)
        for (int64_t y = 0; y < n; ++y) {
            const int64_t row = (x * n + y) * n;
            const int in = x >= box[0] && x <= box[3] && y >= box[1] && y <= box[4] && z1 > z0;
            for (int c = 0; c < 4; ++c) {
                if (!in) {
                    memset(planes[c] + row, 0, (size_t)n * sizeof(float));
                    continue;
                }
                memset(planes[c] + row, 0, (size_t)z0 * sizeof(float));
                memset(planes[c] + row + z1, 0, (size_t)(n - z1) * sizeof(float));
            }
            if (!in) continue;
            int64_t i = row + z0;
#if defined(__AVX__)
            for (; i + 8 <= row + z1; i += 8) { /* 8 records: the 8 x 4 transpose of march_pack's, backwards */
                __m256 r[4];
                for (int q = 0; q < 4; ++q) {
                    r[q] = _mm256_loadu_ps(a + 4 * i + 8 * q);
                    if (b) r[q] = _mm256_add_ps(r[q], _mm256_loadu_ps(b + 4 * i + 8 * q));
                }
                /* r[0] = nodes 0, 1; r[1] = 2, 3; r[2] = 4, 5; r[3] = 6, 7 (4 channels each) */
                const __m256 p0 = _mm256_permute2f128_ps(r[0], r[2], 0x20), p1 = _mm256_permute2f128_ps(r[0], r[2], 0x31);
                const __m256 p2 = _mm256_permute2f128_ps(r[1], r[3], 0x20), p3 = _mm256_permute2f128_ps(r[1], r[3], 0x31);
                /* p0 = nodes 0, 4; p1 = 1, 5; p2 = 2, 6; p3 = 3, 7 */
                const __m256 t0 = _mm256_unpacklo_ps(p0, p1), t1 = _mm256_unpackhi_ps(p0, p1);
                const __m256 t2 = _mm256_unpacklo_ps(p2, p3), t3 = _mm256_unpackhi_ps(p2, p3);
                /* t0 = (c0: n0 n1, c1: n0 n1 | nodes 4, 5), t1 = the same of c2, c3; t2, t3 of nodes 2, 3 | 6, 7 */
                _mm256_storeu_ps(planes[0] + i, _mm256_shuffle_ps(t0, t2, 0x44));
                _mm256_storeu_ps(planes[1] + i, _mm256_shuffle_ps(t0, t2, 0xEE));
                _mm256_storeu_ps(planes[2] + i, _mm256_shuffle_ps(t1, t3, 0x44));
                _mm256_storeu_ps(planes[3] + i, _mm256_shuffle_ps(t1, t3, 0xEE));
            }
#endif
            for (; i < row + z1; ++i) {
                float r[4];
                for (int c = 0; c < 4; ++c) r[c] = b ? a[4 * i + c] + b[4 * i + c] : a[4 * i + c];
                for (int c = 0; c < 4; ++c) planes[c][i] = r[c];
            }
            memset(a + 4 * (row + z0), 0, (size_t)(z1 - z0) * 4 * sizeof(float));
            if (b) memset(b + 4 * (row + z0), 0, (size_t)(z1 - z0) * 4 * sizeof(float));
        }
}

/* e^x for float in plain arithmetic (Cody-Waite reduction and cephes' polynomial, ~1 ulp), so loops over
   blocks of samples vectorise; 0 below -87.3 (where expf gives denormals or 0), +inf above 88.7. */
static inline float m_expf(float x) {
    const float xc = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
    const float k = floorf(xc * 1.44269504088896341f + 0.5f);
    const float r = (xc - k * 0.693359375f) + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } two_k;
    two_k.i = ((int32_t)k + 127) << 23;
    return x < -87.3f ? 0.0f : (x > 88.7f ? INFINITY : y * two_k.f);
}

/* tanh for float in plain arithmetic, branch-free: the odd Taylor series to x^13 where |x| < 0.35 (remainder
   < 1e-9 relative), else sign(x) (1 - 2 / (e^2|x| + 1)) with m_expf; a few ulps from tanhf (glibc's tanhf goes
   through expm1f and cost a third of a forward with tanh features). NaN gives NaN. */
static inline float m_tanhf(float x) {
    const float a = fabsf(x), x2 = x * x;
    float p = -21844.0f / 6081075.0f; /* tanh x = x - x^3 (1/3 - 2x^2/15 + 17x^4/315 - ...): Horner from x^13 */
    p = p * x2 + 1382.0f / 155925.0f;
    p = p * x2 - 62.0f / 2835.0f;
    p = p * x2 + 17.0f / 315.0f;
    p = p * x2 - 2.0f / 15.0f;
    p = p * x2 + 1.0f / 3.0f;
    const float small = x - x * x2 * p;
    const float big = 1.0f - 2.0f / (m_expf(2.0f * a) + 1.0f);
    return a < 0.35f ? small : (x < 0 ? -big : big);
}

/* NaN-propagating min and max (as torch.minimum / torch.maximum and amin / amax). */
static inline double m_min(double a, double b) { return a != a || b != b ? NAN : (a < b ? a : b); }
static inline double m_max(double a, double b) { return a != a || b != b ? NAN : (a > b ? a : b); }

#if defined(__AVX__)
/* The 8 corner values of a float plane p at a cell (corners q, q + 1 are z neighbours: one 8-byte load per pair)
   times the cell's 8 weights w8, as one vector. */
static inline __m256 m_corner_prod(const float* w8, const float* p, const int64_t* o) {
    __m128 lo = _mm_castpd_ps(_mm_load_sd((const double*)(p + o[0])));
    lo = _mm_loadh_pi(lo, (const __m64*)(p + o[2]));
    __m128 hi = _mm_castpd_ps(_mm_load_sd((const double*)(p + o[4])));
    hi = _mm_loadh_pi(hi, (const __m64*)(p + o[6]));
    return _mm256_mul_ps(_mm256_set_m128(hi, lo), _mm256_loadu_ps(w8));
}

/* The sum of v's 8 lanes. */
static inline float m_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#if defined(__AVX2__) && defined(__FMA__)
/* Adds the 8 lanes of acc (lane q: corner q of a cell) into the float plane g at the cell's corners o[q] (lanes q,
   q + 1 are z neighbours, adjacent in memory: 4 pairs). */
static inline void m_flush8(float* g, const int64_t* o, __m256 acc) {
    __m128 a = _mm_loadl_pi(_mm_setzero_ps(), (const __m64*)(g + o[0]));
    a = _mm_add_ps(_mm_loadh_pi(a, (const __m64*)(g + o[2])), _mm256_castps256_ps128(acc));
    _mm_storel_pi((__m64*)(g + o[0]), a);
    _mm_storeh_pi((__m64*)(g + o[2]), a);
    __m128 b = _mm_loadl_pi(_mm_setzero_ps(), (const __m64*)(g + o[4]));
    b = _mm_add_ps(_mm_loadh_pi(b, (const __m64*)(g + o[6])), _mm256_extractf128_ps(acc, 1));
    _mm_storel_pi((__m64*)(g + o[4]), b);
    _mm_storeh_pi((__m64*)(g + o[6]), b);
}
#endif

/* Raw density and 3 raw features of a sample (cell base, weights w8) from node records (4 floats a node: density,
   features), v[0] the density, v[1 + c] feature c: one load per corner pair (z neighbours, adjacent records), and
   the same products summed in the same order as m_tri8 (density, m_hsum8's order) and m_features (features,
   m_hsum8x4's), so the same bits as from the planes. An empty asm makes each product a value of its own, so no
   product is fused into a sum (which would round differently). */
static inline void m_lookup_aos(const float* aos, int64_t base, const float* w8, const int64_t* o, float* v) {
    const float* a = aos + 4 * base;
    __m256 p[4]; /* p[q]: corners 2q (low half) and 2q + 1 (high half), 4 channels each, times their weights */
    for (int q = 0; q < 4; ++q) {
        p[q] = _mm256_mul_ps(_mm256_loadu_ps(a + 4 * o[2 * q]),
                             _mm256_set_m128(_mm_set1_ps(w8[2 * q + 1]), _mm_set1_ps(w8[2 * q])));
        __asm__("" : "+x"(p[q]));
    }
    /* m_hsum8's ((c0 + c4) + (c2 + c6)) + ((c1 + c5) + (c3 + c7)) */
    const __m256 dd = _mm256_add_ps(_mm256_add_ps(p[0], p[2]), _mm256_add_ps(p[1], p[3]));
    const __m128 d = _mm_add_ps(_mm256_castps256_ps128(dd), _mm256_extractf128_ps(dd, 1));
    /* m_hsum8x4's ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) */
    __m128 e[4];
    for (int q = 0; q < 4; ++q) e[q] = _mm_add_ps(_mm256_castps256_ps128(p[q]), _mm256_extractf128_ps(p[q], 1));
    const __m128 f = _mm_add_ps(_mm_add_ps(e[0], e[1]), _mm_add_ps(e[2], e[3]));
    _mm_storeu_ps(v, _mm_blend_ps(f, d, 1)); /* lane 0 from d */
}

/* The sums of the lanes of a, b, c and d, as the 4 lanes of one vector. */
static inline __m128 m_hsum8x4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d)); /* halves of each sum */
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}
#endif

#define T float
#define SUF f32
#define FAST_FLOAT 1
#define EXP expf
#define EXPM1 expm1f
#define LOG1P log1pf
#define TANH m_tanhf
#define LOG1PV m_log1pf
#include __FILE__
#undef T
#undef SUF
#undef EXP
#undef EXPM1
#undef LOG1P
#undef TANH
#undef LOG1PV
#undef FAST_FLOAT

#define T double
#define SUF f64
#define FAST_FLOAT 0
#define EXP exp
#define EXPM1 expm1
#define LOG1P log1p
#define TANH tanh
#define LOG1PV log1p
#include __FILE__
#undef T
#undef SUF
#undef EXP
#undef EXPM1
#undef LOG1P
#undef TANH
#undef LOG1PV
#undef FAST_FLOAT

#else /* typed kernels */

/* The field a ray batch is rendered through, and how (one struct per call, filled by march.py). */
typedef struct {
    int64_t n;              /* grid nodes per side */
    const T* density;       /* (n^3,) raw density (march_fwd; march_bwd reads no grid) */
    const T* const* feats;  /* C planes (n^3,) of raw features (march_fwd) */
    int64_t C;              /* feature channels, <= MAXC */
    T scale, shift;         /* sigma = softplus(raw * scale + shift); scale = exp(d_scale) */
    T step;                 /* march step, world units */
    int64_t tanh_act;       /* 1: features through tanh, 0: identity */
    T thr;                  /* features count where w >= thr */
    const uint8_t* occ;     /* (g^3,) occupancy bits, or NULL: every sample looked up, rays never stop */
    int64_t g;              /* coarse cells per side */
    const int64_t* coarse;  /* (n,) coarse cell of each fine cell index, i / cell (no division per sample) */
    T t_stop;               /* with occ: a ray stops once its transmittance is below this (0: never) */
    T empty_scale;          /* > 0: each ray's emptiness sum, sum_i log(1 + empty_scale w_i), is made */
    const float* aos;       /* march_fwd, or NULL: the field as node records (march_pack), read instead of density
                               and feats (float, C == 3, march_aos()) */
    float* g_aos;           /* march_bwd with both parts, or NULL: node records the gradients are added into
                               (march_unpack), instead of g_density and g_features (as aos) */
} FN(field_t);

/* The hit rays (see the file comment). first may be NULL (0 for every ray). */
typedef struct {
    const T* start;
    const T* delta;
    const T* t0;
    const int64_t* first;
    const int64_t* kept;
    const int64_t* ray;
    const int64_t* order; /* (n,) the order rays are walked in (march_order), or NULL: 0, 1, ... */
    int64_t K;            /* samples per row of the dense weights */
} FN(rays_t);

#include "corner.h" /* FN(cell_of): a point's cell, as trilinear.c's (whose FN(corner) m_corners follows) */

/* Whether x lies in an occupied coarse cell (as trilinear.c's occupied(); NaN points count as occupied). */
static inline int FN(m_occupied)(const T* x3, int64_t n, const uint8_t* occ, int64_t g, const int64_t* coarse) {
    int64_t c[3];
    if (!FN(cell_of)(x3, n, c)) return 1;
    return occ[(coarse[c[0]] * g + coarse[c[1]]) * g + coarse[c[2]]];
}

/* sum_q w[k][q] p[o[q]] over a cell's 8 corners (weights of sample k of a block): in one vector for float with
   AVX, else summed as a tree (a chain of 8 dependent FMAs was the forward's critical path). */
static inline T FN(m_tri8)(const T (*w)[8], int64_t k, const T* p, const int64_t* o) {
#if FAST_FLOAT && defined(__AVX__)
    return m_hsum8(m_corner_prod(w[k], p, o));
#else
    const T a = w[k][0] * p[o[0]] + w[k][1] * p[o[1]], b = w[k][2] * p[o[2]] + w[k][3] * p[o[3]];
    const T c = w[k][4] * p[o[4]] + w[k][5] * p[o[5]], d = w[k][6] * p[o[6]] + w[k][7] * p[o[7]];
    return (a + b) + (c + d);
#endif
}

/* Cell index (into i) and fraction of the index coordinate x along one axis, with corner()'s clamping: x into
   [0, top = n - 1] (a NaN to 0), the cell into [0, n - 2]. Branch-free, for the vectorised loops below. */
static inline T FN(m_axis)(T x, T top, int32_t n, int32_t* i) {
    x = x != x ? 0 : x;
    x = x < 0 ? 0 : x;
    x = x > top ? top : x;
    const int32_t c = (int32_t)x; /* floor, x >= 0 */
    *i = c > n - 2 ? n - 2 : c;
    return x - (T)*i;
}

/* Cells (their lower node's flat index, base[k]) and trilinear weights (w[k][q], corner q = 4a + 2b + c at
   base + a n^2 + b n + c) of the samples start + idx[k] delta (index coordinates) for k < nb, with corner()'s
   clamping; bad[k] = 1 for a NaN point (its cell and weights are then those of the origin, unused). Branch-free
   and in 32-bit integers, so the compiler vectorises it (n^3 < 2^31: fused_supported checks). */
static inline void FN(m_corners)(const T* s, const T* d, const int32_t* idx, int64_t nb, int32_t n, int32_t* base,
                                 T (*w)[8], int32_t* bad) {
    const T top = (T)(n - 1);
    for (int64_t k = 0; k < nb; ++k) {
        const T fi = (T)idx[k];
        T f[3];
        int32_t c[3], nan = 0;
        for (int a = 0; a < 3; ++a) {
            const T x = s[a] + fi * d[a];
            nan |= x != x;
            f[a] = FN(m_axis)(x, top, n, &c[a]);
        }
        base[k] = (c[0] * n + c[1]) * n + c[2];
        bad[k] = nan;
        const T gx = 1 - f[0], gy = 1 - f[1], gz = 1 - f[2];
        const T xy[4] = {gx * gy, gx * f[1], f[0] * gy, f[0] * f[1]};
        for (int j = 0; j < 4; ++j) {
            w[k][2 * j] = xy[j] * gz;
            w[k][2 * j + 1] = xy[j] * f[2];
        }
    }
}

/* Cells (base[k], as m_corners's) of the samples start + (i0 + k) delta for k < nb (a NaN point: the origin's). */
static inline void FN(m_bases)(const T* s, const T* d, int64_t i0, int64_t nb, int32_t n, int32_t* base) {
    const T top = (T)(n - 1);
    for (int64_t k = 0; k < nb; ++k) {
        const T fi = (T)(int32_t)(i0 + k);
        int32_t c[3];
        for (int a = 0; a < 3; ++a) FN(m_axis)(s[a] + fi * d[a], top, n, &c[a]);
        base[k] = (c[0] * n + c[1]) * n + c[2];
    }
}

/* Raw features f (C,) of sample k of a block (cell base, weights w[k][q]; a corner shared with the last sample is
   still in L1: no copy of the cell's values pays off); march_fwd activates a block's at once. */
static inline void FN(m_features)(const FN(field_t)* F, int64_t base, const T (*w)[8], int64_t k, T* f) {
    const int64_t n = F->n, nn = n * n;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
#if FAST_FLOAT && defined(__AVX__)
    for (int64_t c0 = 0; c0 < F->C; c0 += 4) { /* four channels' sums at once */
        __m256 v[4];
        for (int c = 0; c < 4; ++c)
            v[c] = c0 + c < F->C ? m_corner_prod(w[k], F->feats[c0 + c] + base, o) : _mm256_setzero_ps();
        float r[4];
        _mm_storeu_ps(r, m_hsum8x4(v[0], v[1], v[2], v[3]));
        for (int c = 0; c < 4 && c0 + c < F->C; ++c) f[c0 + c] = r[c];
    }
#else
    for (int64_t c = 0; c < F->C; ++c) f[c] = FN(m_tri8)(w, k, F->feats[c] + base, o);
#endif
}

/* Prefetches the cache lines of the cell at base (its 8 corners: 4 z-pairs) in the planes P (c < C). */
static inline void FN(m_prefetch)(const T* const* P, int64_t C, int64_t base, const int64_t* o, int write) {
    for (int64_t c = 0; c < C; ++c)
        for (int q = 0; q < 8; q += 2) {
            if (write) __builtin_prefetch(P[c] + base + o[q], 1);
            else __builtin_prefetch(P[c] + base + o[q], 0);
        }
}

/* Prefetches the density and feature lines of the cells base[k], k < nb (skipping bad[k] != 0 where bad is given,
   and runs of one cell: *last, updated, is the cell prefetched last). */
static inline void FN(m_prefetch_cells)(const FN(field_t)* F, const int32_t* base, const int32_t* bad, int64_t nb,
                                        const int64_t* o, int64_t* last) {
    for (int64_t k = 0; k < nb; ++k)
        if (!(bad && bad[k]) && base[k] != *last) {
            if (F->aos) {
                m_prefetch_records(F->aos, base[k], o, 0);
            } else {
                FN(m_prefetch)(&F->density, 1, base[k], o, 0);
                FN(m_prefetch)(F->feats, F->C, base[k], o, 0);
            }
            *last = base[k];
        }
}

#if FAST_FLOAT
#define MEXP m_expf
#else
#define MEXP EXP
#endif

#if FAST_FLOAT
/* softplus(z) = log(1 + e^z) (z itself above 20, as torch's) for float in plain arithmetic, branch-free:
   max(z, 0) + log1p(e^-|z|), log1p(e) = 2 atanh(e / (2 + e)) by its odd series (to u^19, u <= 1/3: remainder
   < 3e-10 relative); a few ulps from log1pf. */
static inline T FN(m_softplus)(T z) {
    const T e = MEXP(-fabsf(z)), u = e / (2 + e), u2 = u * u;
    T p = (T)(1.0 / 19);
    p = p * u2 + (T)(1.0 / 17);
    p = p * u2 + (T)(1.0 / 15);
    p = p * u2 + (T)(1.0 / 13);
    p = p * u2 + (T)(1.0 / 11);
    p = p * u2 + (T)(1.0 / 9);
    p = p * u2 + (T)(1.0 / 7);
    p = p * u2 + (T)(1.0 / 5);
    p = p * u2 + (T)(1.0 / 3);
    p = p * u2 + 1;
    const T sp = (z > 0 ? z : 0) + 2 * u * p;
    return z > 20 ? z : sp;
}

/* e^x - 1 for float by its Taylor series to x^9: within 1e-9 relative for -0.35 < x <= 0. */
static inline T FN(m_expm1_small)(T x) {
    T q = x * (T)(1.0 / 9);
    q = x * (T)(1.0 / 8) * (1 + q);
    q = x * (T)(1.0 / 7) * (1 + q);
    q = x * (T)(1.0 / 6) * (1 + q);
    q = x * (T)(1.0 / 5) * (1 + q);
    q = x * (T)(1.0 / 4) * (1 + q);
    q = x * (T)(1.0 / 3) * (1 + q);
    q = x * (T)(1.0 / 2) * (1 + q);
    return x * (1 + q);
}
#endif

/* For t < nb: tau[t] = softplus(raw[t] scale + shift) step and em[t] = e^-tau[t] - 1. For float, branch-free
   loops the compiler vectorises: m_softplus, and e^x - 1 (x = -tau) by m_expm1_small where x > -0.35, else
   e^x - 1 (> 0.29 in size: a few ulps); a few float ulps from log1pf/expm1f. When no sample of the block can
   reach tau = 0.34 (softplus(z) <= max(z, 0) + log 2), as in a field's first steps, e^x is not computed at all
   (a fifth of a step's forward with a random density); the results are the same. For double the libm
   functions. */
static inline void FN(m_thickness)(const T* raw, int64_t nb, T scale, T shift, T step, T* tau, T* em) {
#if FAST_FLOAT
    T zmax = 0; /* the largest z, at least 0 (NaN z are left out: they give NaN either way) */
    for (int64_t t = 0; t < nb; ++t) {
        const T z = raw[t] * scale + shift;
        zmax = z > zmax ? z : zmax;
    }
    if ((zmax + (T)0.6932) * step < (T)0.34) {
        for (int64_t t = 0; t < nb; ++t) {
            const T ta = FN(m_softplus)(raw[t] * scale + shift) * step;
            tau[t] = ta;
            em[t] = FN(m_expm1_small)(-ta);
        }
        return;
    }
    for (int64_t t = 0; t < nb; ++t) {
        const T ta = FN(m_softplus)(raw[t] * scale + shift) * step, x = -ta;
        tau[t] = ta;
        em[t] = x > (T)-0.35 ? FN(m_expm1_small)(x) : MEXP(x) - 1;
    }
#else
    for (int64_t t = 0; t < nb; ++t) {
        const T z = raw[t] * scale + shift;
        tau[t] = (z > 20 ? z : LOG1P(EXP(z))) * step;
        em[t] = EXPM1(-tau[t]);
    }
#endif
}

/* The softplus's derivative: sg[t] = sigmoid(z) = e^z / (e^z + 1), z = raw[t] scale + shift, 1 above 20 (as
   torch's softplus backward), for t < nb (vectorised for float). */
static inline void FN(m_sigmoid)(const T* raw, int64_t nb, T scale, T shift, T* sg) {
    for (int64_t t = 0; t < nb; ++t) {
        const T z = raw[t] * scale + shift;
        const T e = MEXP(z > 20 ? 20 : z);
        sg[t] = z > 20 ? 1 : e / (e + 1);
    }
}

/* Forward of hit rays j in [j0, j1). Writes the dense weights w (n, K) rows j (zero where no sample, or a
   skipped one), raw (n, K) the raw density of every sample with w != 0 and fs (n, K, C) the activated features
   of every sample with w >= thr (both read by march_bwd only; other entries are left as they are; both may be
   NULL, for a render nobody differentiates), for ray r = ray[j]: out_feat (R, C) = sum_i [w_i >= thr] w_i f_i +
   (1 - opacity) bg[r], out_depth (R,) = sum_i w_i t_i + (1 - opacity) bg_depth, out_op (R,) = 1 - T_end;
   stats (n, 2): samples looked up, samples with w >= thr; and where F->empty_scale > 0, out_empty (n,) =
   sum_i log(1 + empty_scale w_i) of hit ray j (the emptiness loss's sum over its row of the dense weights).
   Rays that miss the box are not touched (the caller fills them). */
void FN(march_fwd)(const FN(field_t)* F, const FN(rays_t)* Rs, int64_t j0, int64_t j1, const T* bg, T bg_depth,
                   T* w, T* raw, T* fs, T* out_feat, T* out_depth, T* out_op, int64_t* stats, T* out_empty) {
    const int64_t n = F->n, nn = n * n, C = F->C, K = Rs->K;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
    T rgb[MAXC];
    /* a block of live samples (the next BLOCK not in empty cells): their density looked up (independent loads),
       their thickness (vectorised), their weights in order; then the features of those that count */
#if FAST_FLOAT && defined(__AVX__)
    T brec[4 * BLOCK]; /* with records: each live sample's raw density and features */
#endif
    T braw[BLOCK], btau[BLOCK], bem[BLOCK], bw[BLOCK], blog[BLOCK], bcw[BLOCK][8], bfeat[BLOCK * MAXC];
    int32_t bbase[BLOCK], bi[BLOCK], bnan[BLOCK], ahead[BLOCK], bsh[BLOCK]; /* bnan 1: a NaN point (reads NaN) */
    for (int64_t jj = j0; jj < j1; ++jj) {
        const int64_t j = Rs->order ? Rs->order[jj] : jj;
        const int64_t m = Rs->kept[j], off = j * K + (Rs->first ? Rs->first[j] : 0), r = Rs->ray[j];
        const T* s = Rs->start + 3 * j;
        const T* d = Rs->delta + 3 * j;
        const T t0 = Rs->t0[j];
        memset(w + j * K, 0, (size_t)K * sizeof(T));
        T* wr = w + off;
        T* rr = raw ? raw + off : NULL;
        T trans = 1, dep = 0;
        double empty = 0;
        int64_t looked = 0, shaded = 0, pcell = -1;
        int stopped = 0, first_block = 1;
        for (int64_t c = 0; c < C; ++c) rgb[c] = 0;
        for (int64_t i = 0; i < m && !stopped;) {
            int64_t nl = 0;
            if (F->occ) {
                for (; i < m && nl < BLOCK; ++i) { /* the next live samples */
                    const T x[3] = {s[0] + (T)i * d[0], s[1] + (T)i * d[1], s[2] + (T)i * d[2]};
                    if (FN(m_occupied)(x, n, F->occ, F->g, F->coarse)) bi[nl++] = (int32_t)i;
                }
            } else {
                for (; i < m && nl < BLOCK; ++i) bi[nl++] = (int32_t)i;
            }
            FN(m_corners)(s, d, bi, nl, (int32_t)n, bbase, bcw, bnan); /* their cells and weights */
            if (first_block || F->occ) /* their lines on their way (without skipping, later blocks' lines are
                                          prefetched a block ahead, below) */
                FN(m_prefetch_cells)(F, bbase, bnan, nl, o, &pcell);
            first_block = 0;
            if (!F->occ && i < m) { /* the next block's lines while this one is worked on */
                const int64_t na = m - i < BLOCK ? m - i : BLOCK;
                FN(m_bases)(s, d, i, na, (int32_t)n, ahead);
                FN(m_prefetch_cells)(F, ahead, NULL, na, o, &pcell);
            }
#if FAST_FLOAT && defined(__AVX__)
            if (F->aos) { /* their raw density and features at once (the records: one load per corner pair) */
                for (int64_t k = 0; k < nl; ++k) {
                    m_lookup_aos(F->aos, bbase[k], bcw[k], o, brec + 4 * k);
                    braw[k] = bnan[k] ? NAN : brec[4 * k];
                }
            } else
#endif
            for (int64_t k = 0; k < nl; ++k) /* their raw density */
                braw[k] = bnan[k] ? NAN : FN(m_tri8)(bcw, k, F->density + bbase[k], o);
            FN(m_thickness)(braw, nl, F->scale, F->shift, F->step, btau, bem);
            /* their weights, in order (the one serial chain, T_{k+1} = T_k - w_k), up to the stop; tau == 0: no
               weight, as a skipped sample */
            int64_t ns = nl; /* samples composited */
            if (F->occ && F->t_stop > 0) {
                for (int64_t k = 0; k < nl; ++k) {
                    const T wi = btau[k] != 0 ? -bem[k] * trans : 0;
                    trans = trans - wi;
                    bw[k] = wi;
                    if (trans < F->t_stop) { /* later weights are all below t_stop */
                        ns = k + 1;
                        stopped = 1;
                        break;
                    }
                }
            } else {
                for (int64_t k = 0; k < nl; ++k) {
                    const T wi = btau[k] != 0 ? -bem[k] * trans : 0;
                    trans = trans - wi;
                    bw[k] = wi;
                }
            }
            looked += ns;
            int64_t nsh = 0; /* the samples that count (w >= thr): features looked up (independent loads), then
                                activated together */
            for (int64_t k = 0; k < ns; ++k)
                if (bw[k] >= F->thr) bsh[nsh++] = (int32_t)k;
#if FAST_FLOAT && defined(__AVX__)
            if (F->aos) {
                for (int64_t t = 0; t < nsh; ++t)
                    for (int64_t c = 0; c < 3; ++c) bfeat[t * 3 + c] = brec[4 * bsh[t] + 1 + c];
            } else
#endif
            for (int64_t t = 0; t < nsh; ++t) /* (a NaN point weighs NaN: never among them) */
                FN(m_features)(F, bbase[bsh[t]], bcw, bsh[t], bfeat + t * C);
            if (F->tanh_act)
                for (int64_t t = 0; t < nsh * C; ++t) bfeat[t] = TANH(bfeat[t]); /* vectorised for float */
            shaded += nsh;
            if (F->empty_scale > 0) { /* the emptiness sum (w = 0 adds log 1 = 0) */
                for (int64_t k = 0; k < ns; ++k) blog[k] = LOG1PV(F->empty_scale * bw[k]); /* vectorised for float */
                for (int64_t k = 0; k < ns; ++k) empty += (double)blog[k];
            }
            /* the weights out, and the depth, in order; the features out, and their sum, in order (the raw
               densities and features only for a backward: rr, fs NULL otherwise, one loop for each case) */
            if (rr) {
                for (int64_t k = 0; k < ns; ++k)
                    if (btau[k] != 0) {
                        const int64_t ik = bi[k];
                        wr[ik] = bw[k];
                        rr[ik] = braw[k];
                        dep += bw[k] * (t0 + (T)ik * F->step);
                    }
                for (int64_t t = 0; t < nsh; ++t) {
                    const int32_t k = bsh[t];
                    T* fi = fs + (off + bi[k]) * C;
                    for (int64_t c = 0; c < C; ++c) {
                        fi[c] = bfeat[t * C + c];
                        rgb[c] += bw[k] * fi[c];
                    }
                }
            } else {
                for (int64_t k = 0; k < ns; ++k)
                    if (btau[k] != 0) {
                        const int64_t ik = bi[k];
                        wr[ik] = bw[k];
                        dep += bw[k] * (t0 + (T)ik * F->step);
                    }
                for (int64_t t = 0; t < nsh; ++t)
                    for (int64_t c = 0; c < C; ++c) rgb[c] += bw[bsh[t]] * bfeat[t * C + c];
            }
        }
        const T keep = 1 - (1 - trans); /* 1 - opacity, rounded as the torch path's */
        out_op[r] = 1 - trans;
        out_depth[r] = dep + keep * bg_depth;
        for (int64_t c = 0; c < C; ++c) out_feat[r * C + c] = rgb[c] + keep * bg[r * C + c];
        stats[2 * j] = looked;
        stats[2 * j + 1] = shaded;
        if (F->empty_scale > 0) out_empty[j] = (T)empty;
    }
}

/* Adds acc[c][q] (c < C) into the cell of base in the planes G (its 8 corners at base + o[q]) and clears acc;
   corners q, q + 1 are z neighbours, adjacent in memory: one pair load and store each. */
static inline void FN(m_flush)(T* const* G, int64_t C, int64_t base, const int64_t* o, T acc[][8]) {
    typedef T pair_t __attribute__((vector_size(2 * sizeof(T))));
    for (int64_t c = 0; c < C; ++c) {
        T* g = G[c] + base;
        for (int q = 0; q < 8; q += 2) { /* corners q, q + 1 are z neighbours: adjacent in memory */
            pair_t v, a = {acc[c][q], acc[c][q + 1]};
            memcpy(&v, g + o[q], sizeof v);
            v += a;
            memcpy(g + o[q], &v, sizeof v);
            acc[c][q] = acc[c][q + 1] = 0;
        }
    }
}

/* bwd_range's first walk of a ray's m samples (weights wr, their gradient gwr or NULL, activated features fsr,
   sample i's at fsr + i NC): st[i] = T_{i+1} and sa[i] = a_i where w_i != 0; returns T_end. NC, the channel count,
   is a constant where it is inlined (the dot products unrolled). */
static inline __attribute__((always_inline)) T FN(m_weigh)(const FN(field_t)* F, const T* wr, const T* gwr,
                                                           const T* fsr, const T* grgb, int64_t m, T gdep, T t0,
                                                           T ge, T es, T* st, T* sa, const int64_t NC) {
    T trans = 1;
    for (int64_t i = 0; i < m; ++i) {
        const T wi = wr[i];
        if (wi == 0) continue;
        trans = trans - wi;
        st[i] = trans;
        T a = (gwr ? gwr[i] : 0) + gdep * (t0 + (T)i * F->step);
        if (ge != 0) a += ge / (1 + es * wi);
        if (wi >= F->thr) {
            const T* f = fsr + i * NC;
            for (int64_t c = 0; c < NC; ++c) a += grgb[c] * f[c];
        }
        sa[i] = a;
    }
    return trans;
}

/* The next block of a ray's samples to scatter, from sample i0 (of m): those with something to scatter (w != 0 for
   the density, w >= thr for the features) as bi[k], with their cells and weights (m_corners); the gradient lines
   their flushes will write (cells other than cur, the one being summed) are prefetched. Returns their count. */
static inline int64_t FN(m_scatter_block)(const FN(field_t)* F, const T* s, const T* d, const T* wr, int64_t i0,
                                          int64_t m, int dens, int feat, T* const* gd, T* const* g_features,
                                          int64_t C, int64_t cur, const int64_t* o, int32_t* bi, int32_t* bbase,
                                          T (*bcw)[8], int32_t* bnan) {
    const int64_t i1 = i0 + BLOCK < m ? i0 + BLOCK : m;
    int64_t nb = 0;
    for (int64_t i = i0; i < i1; ++i)
        if (wr[i] != 0 && (dens || wr[i] >= F->thr)) bi[nb++] = (int32_t)i;
    FN(m_corners)(s, d, bi, nb, (int32_t)F->n, bbase, bcw, bnan);
    for (int64_t k = 0, pc = cur; k < nb; ++k)
        if (!bnan[k] && bbase[k] != pc) {
            pc = bbase[k];
            if (F->g_aos) {
                m_prefetch_records(F->g_aos, pc, o, 1);
                continue;
            }
            if (dens) FN(m_prefetch)((const T* const*)gd, 1, pc, o, 1);
            if (feat && wr[bi[k]] >= F->thr) FN(m_prefetch)((const T* const*)g_features, C, pc, o, 1);
        }
    return nb;
}

#if FAST_FLOAT && defined(__AVX2__) && defined(__FMA__)
/* bwd_range's scatter of one ray (its samples start s, step d, i < m) for NC <= 4 feature channels (a constant
   where it is inlined), with a cell's sums in registers (one vector of its 8 corners per grid) instead of arrays:
   the same sums in the same order, so the same bits. fsr: the ray's activated features (sample i's at
   fsr + i NC). Returns sum_i g_z_i raw_i. */
static inline __attribute__((always_inline)) double FN(m_scatter_v)(
    const FN(field_t)* F, const T* s, const T* d, int64_t m, const T* wr, const T* rr, const T* sa, const T* sg,
    const T* fsr, const T* grgb, int dens, int feat, T* g_density, T* const* g_features, const int64_t NC) {
    const int64_t n = F->n, nn = n * n;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
    T bcw[BLOCK][8];
    int32_t bi[BLOCK], bbase[BLOCK], bnan[BLOCK];
    T* const gd[1] = {g_density};
    const __m256 zero = _mm256_setzero_ps();
    __m256 da = zero, fa[4] = {zero, zero, zero, zero};
    int64_t cur = -1;
    int fdirty = 0;
    double gds = 0;
    for (int64_t i0 = 0; i0 < m; i0 += BLOCK) {
        const int64_t nb = FN(m_scatter_block)(F, s, d, wr, i0, m, dens, feat, gd, g_features, NC, cur, o, bi, bbase,
                                               bcw, bnan);
        for (int64_t k = 0; k < nb; ++k) {
            const int64_t i = bi[k], b = bbase[k];
            const T wi = wr[i];
            const int shade = feat && wi >= F->thr, ok = !bnan[k];
            if (ok && b != cur) {
                if (cur >= 0) {
                    if (dens) m_flush8(g_density + cur, o, da);
                    if (fdirty)
                        for (int64_t c = 0; c < NC; ++c) m_flush8(g_features[c] + cur, o, fa[c]);
                }
                da = zero;
                for (int64_t c = 0; c < NC; ++c) fa[c] = zero;
                cur = b;
                fdirty = 0;
            }
            const __m256 cw = _mm256_loadu_ps(bcw[k]);
            if (dens) {
                const T gz = sa[i] * F->step * sg[i];
                gds += (double)gz * (double)rr[i];
                const T gr = gz * F->scale;
                if (ok) da = _mm256_fmadd_ps(cw, _mm256_set1_ps(gr), da);
            }
            if (shade && ok) {
                fdirty = 1;
                const T* f = fsr + i * NC;
                for (int64_t c = 0; c < NC; ++c) {
                    T gf = wi * grgb[c];
                    if (F->tanh_act) gf *= 1 - f[c] * f[c];
                    fa[c] = _mm256_fmadd_ps(cw, _mm256_set1_ps(gf), fa[c]);
                }
            }
        }
    }
    if (cur >= 0) {
        if (dens) m_flush8(g_density + cur, o, da);
        if (fdirty)
            for (int64_t c = 0; c < NC; ++c) m_flush8(g_features[c] + cur, o, fa[c]);
    }
    return gds;
}
#endif

#if FAST_FLOAT && defined(__AVX2__) && defined(__FMA__)
/* m_scatter_v with both parts and 3 channels into node records (F->g_aos): a cell's sums as one vector per corner
   pair (the density and feature sums of corners 2q and 2q + 1, as their records lie), each sample's gradients
   (density; features where w >= thr, else 0) multiplied in at once, and one 32-byte add per corner pair where the
   cell is left: the same fused multiply-adds on each sum as m_scatter_v's, so the same bits. */
static double FN(m_scatter_aos)(const FN(field_t)* F, const T* s, const T* d, int64_t m, const T* wr, const T* rr,
                                const T* sa, const T* sg, const T* fsr, const T* grgb) {
    const int64_t n = F->n, nn = n * n;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
    T bcw[BLOCK][8];
    int32_t bi[BLOCK], bbase[BLOCK], bnan[BLOCK];
    float* const g = F->g_aos;
    T* const planes[3] = {NULL, NULL, NULL}; /* (m_scatter_block prefetches the records instead) */
    const __m256 zero = _mm256_setzero_ps();
    __m256 acc[4] = {zero, zero, zero, zero};
    int64_t cur = -1;
    double gds = 0;
    for (int64_t i0 = 0; i0 < m; i0 += BLOCK) {
        const int64_t nb = FN(m_scatter_block)(F, s, d, wr, i0, m, 1, 1, planes, planes, 3, cur, o, bi, bbase, bcw, bnan);
        for (int64_t k = 0; k < nb; ++k) {
            const int64_t i = bi[k], b = bbase[k];
            const T wi = wr[i];
            const T gz = sa[i] * F->step * sg[i];
            gds += (double)gz * (double)rr[i];
            if (bnan[k]) continue;
            if (b != cur) {
                if (cur >= 0)
                    for (int q = 0; q < 4; ++q) {
                        float* r = g + 4 * (cur + o[2 * q]);
                        _mm256_storeu_ps(r, _mm256_add_ps(_mm256_loadu_ps(r), acc[q]));
                    }
                for (int q = 0; q < 4; ++q) acc[q] = zero;
                cur = b;
            }
            __m128 g4 = _mm_set_ss(gz * F->scale); /* the sample's gradients: density, features (0 unshaded); built
                                                     in registers (a vector loaded from 4 stored floats stalls) */
            if (wi >= F->thr) {
                const T* f = fsr + i * 3;
                T gf[3];
                for (int c = 0; c < 3; ++c) {
                    gf[c] = wi * grgb[c];
                    if (F->tanh_act) gf[c] *= 1 - f[c] * f[c];
                }
                g4 = _mm_set_ps(gf[2], gf[1], gf[0], gz * F->scale);
            }
            const __m256 gg = _mm256_set_m128(g4, g4);
            for (int q = 0; q < 4; ++q)
                acc[q] = _mm256_fmadd_ps(_mm256_set_m128(_mm_set1_ps(bcw[k][2 * q + 1]), _mm_set1_ps(bcw[k][2 * q])),
                                         gg, acc[q]);
        }
    }
    if (cur >= 0)
        for (int q = 0; q < 4; ++q) {
            float* r = g + 4 * (cur + o[2 * q]);
            _mm256_storeu_ps(r, _mm256_add_ps(_mm256_loadu_ps(r), acc[q]));
        }
    return gds;
}
#endif

/* Backward of march_fwd for hit rays j in [j0, j1), given the forward's w, raw and fs and the gradients of its
   outputs (g_w (n, K) and g_empty (n,) may be NULL; g_feat (R, C), g_depth (R,), g_op (R,)). parts
   (MARCH_DENSITY | MARCH_FEATURES) says what to do, so two threads can take one part each over every ray:
   - MARCH_DENSITY: with a_i = g_w_i + g_empty[j] s / (1 + s w_i) (s = empty_scale) + [w_i >= thr] <g_rgb, f_i>
     + g_dep t_i (g_rgb = g_feat[r], g_dep = g_depth[r]) and g_opacity = g_op[r] - <g_feat[r], bg[r]> - g_depth[r] bg_depth,
     g_tau_i = a_i T_{i+1} - sum_{l>i} a_l w_l + g_opacity T_end; g_z_i = g_tau_i step sigmoid(z_i) (1 where
     z_i > 20, as torch's softplus); g_density[corners] += cw g_z_i scale, g_dscale[j] = scale sum_i g_z_i raw_i.
   - MARCH_FEATURES: g_features[c][corners] += cw w_i g_rgb_c (times 1 - f_c^2 for tanh) where w_i >= thr.
   Samples with w == 0 (skipped, stopped, tau == 0, past the end) get no gradient. Consecutive samples in one
   cell are summed before one scatter of the cell. scratch: 3 K values. */
static void FN(bwd_range)(const FN(field_t)* F, const FN(rays_t)* Rs, int64_t j0, int64_t j1, const T* bg,
                          T bg_depth, const T* w, const T* raw, const T* fs, const T* g_w, const T* g_feat,
                          const T* g_depth, const T* g_op, const T* g_empty, int64_t parts, T* g_density,
                          T* const* g_features, double* g_dscale, T* scratch) {
    const int64_t n = F->n, nn = n * n, C = F->C, K = Rs->K;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
    const int dens = (parts & MARCH_DENSITY) != 0, feat = (parts & MARCH_FEATURES) != 0;
    T facc[MAXC][8], dacc[1][8], bcw[BLOCK][8];
    int32_t bi[BLOCK], bbase[BLOCK], bnan[BLOCK];
    T* const gd[1] = {g_density};
    for (int64_t c = 0; c < C; ++c)
        for (int q = 0; q < 8; ++q) facc[c][q] = 0;
    for (int q = 0; q < 8; ++q) dacc[0][q] = 0;
    T* sa = scratch;         /* a_i, then g_tau_i */
    T* st = scratch + K;     /* T_{i+1} */
    T* sg = scratch + 2 * K; /* sigmoid(z_i) */
    for (int64_t jj = j0; jj < j1; ++jj) {
        const int64_t j = Rs->order ? Rs->order[jj] : jj;
        const int64_t off = j * K + (Rs->first ? Rs->first[j] : 0), r = Rs->ray[j];
        const T* s = Rs->start + 3 * j;
        const T* d = Rs->delta + 3 * j;
        const T* wr = w + off;
        const T* rr = raw + off;
        const T* grgb = g_feat + r * C;
        int64_t m = Rs->kept[j];
        while (m > 0 && wr[m - 1] == 0) --m; /* samples past the last weighted one (a stopped ray's) give nothing */
        if (dens) {
            /* forward: T_{i+1} and a_i */
            const T* gwr = g_w ? g_w + off : NULL;
            const T gdep = g_depth[r], t0 = Rs->t0[j], es = F->empty_scale;
            const T ge = g_empty && es > 0 ? g_empty[j] * es : 0; /* the emptiness sum's gradient, times s */
            const T* fsr = fs + off * C;
            T trans;
            switch (C) { /* the channel count a constant where it is 1-4: the dot products unrolled */
            case 1: trans = FN(m_weigh)(F, wr, gwr, fsr, grgb, m, gdep, t0, ge, es, st, sa, 1); break;
            case 2: trans = FN(m_weigh)(F, wr, gwr, fsr, grgb, m, gdep, t0, ge, es, st, sa, 2); break;
            case 3: trans = FN(m_weigh)(F, wr, gwr, fsr, grgb, m, gdep, t0, ge, es, st, sa, 3); break;
            case 4: trans = FN(m_weigh)(F, wr, gwr, fsr, grgb, m, gdep, t0, ge, es, st, sa, 4); break;
            default: trans = FN(m_weigh)(F, wr, gwr, fsr, grgb, m, gdep, t0, ge, es, st, sa, C);
            }
            /* reverse: g_tau */
            T gop = g_op[r] - gdep * bg_depth;
            for (int64_t c = 0; c < C; ++c) gop -= grgb[c] * bg[r * C + c];
            const T tail = gop * trans; /* g_opacity T_end */
            T suffix = 0;
            for (int64_t i = m - 1; i >= 0; --i) {
                const T wi = wr[i];
                if (wi == 0) continue;
                const T a = sa[i];
                sa[i] = a * st[i] - suffix + tail;
                suffix += a * wi;
            }
            FN(m_sigmoid)(rr, m, F->scale, F->shift, sg); /* garbage where w == 0, unused there */
        }
        /* scatter, in order: density (every sample with w != 0), features (w >= thr); a block of samples' cells
           and weights at once (vectorised) */
#if FAST_FLOAT && defined(__AVX2__) && defined(__FMA__)
        if (F->g_aos && dens && feat) { /* into node records */
            g_dscale[j] = FN(m_scatter_aos)(F, s, d, m, wr, rr, sa, sg, fs + off * C, grgb) * (double)F->scale;
            continue;
        }
        if (C <= 4) { /* the cell sums in registers */
            const T* fsr = fs + off * C;
            double gds;
            switch (C) {
            case 1: gds = FN(m_scatter_v)(F, s, d, m, wr, rr, sa, sg, fsr, grgb, dens, feat, g_density, g_features, 1); break;
            case 2: gds = FN(m_scatter_v)(F, s, d, m, wr, rr, sa, sg, fsr, grgb, dens, feat, g_density, g_features, 2); break;
            case 3: gds = FN(m_scatter_v)(F, s, d, m, wr, rr, sa, sg, fsr, grgb, dens, feat, g_density, g_features, 3); break;
            default: gds = FN(m_scatter_v)(F, s, d, m, wr, rr, sa, sg, fsr, grgb, dens, feat, g_density, g_features, 4);
            }
            if (dens) g_dscale[j] = gds * (double)F->scale;
            continue;
        }
#endif
        int64_t cur = -1;
        int fdirty = 0; /* facc holds something to flush */
        double gds = 0;
        for (int64_t i0 = 0; i0 < m; i0 += BLOCK) {
            const int64_t nb = FN(m_scatter_block)(F, s, d, wr, i0, m, dens, feat, gd, g_features, C, cur, o, bi,
                                                   bbase, bcw, bnan);
            for (int64_t k = 0; k < nb; ++k) {
                const int64_t i = bi[k], b = bbase[k];
                const T wi = wr[i];
                const int shade = feat && wi >= F->thr, ok = !bnan[k];
                const T* cw = bcw[k];
                if (ok && b != cur) {
                    if (cur >= 0) {
                        if (dens) FN(m_flush)(gd, 1, cur, o, dacc);
                        if (fdirty) FN(m_flush)(g_features, C, cur, o, facc);
                    }
                    cur = b;
                    fdirty = 0;
                }
                if (dens) {
                    const T gz = sa[i] * F->step * sg[i];
                    gds += (double)gz * (double)rr[i];
                    const T gr = gz * F->scale;
                    if (ok)
                        for (int q = 0; q < 8; ++q) dacc[0][q] += cw[q] * gr;
                }
                if (shade && ok) {
                    fdirty = 1;
                    const T* f = fs + (off + i) * C;
                    for (int64_t c = 0; c < C; ++c) {
                        T gf = wi * grgb[c];
                        if (F->tanh_act) gf *= 1 - f[c] * f[c];
                        for (int q = 0; q < 8; ++q) facc[c][q] += cw[q] * gf;
                    }
                }
            }
        }
        if (cur >= 0) {
            if (dens) FN(m_flush)(gd, 1, cur, o, dacc);
            if (fdirty) FN(m_flush)(g_features, C, cur, o, facc);
        }
        if (dens) g_dscale[j] = gds * (double)F->scale;
    }
}

/* march_bwd over rays [j0, j1) (see bwd_range); g_density, g_features and g_dscale are only touched by the
   parts asked for. Returns 0, or 1 if the scratch could not be allocated. */
int FN(march_bwd)(const FN(field_t)* F, const FN(rays_t)* Rs, int64_t j0, int64_t j1, const T* bg, T bg_depth,
                  const T* w, const T* raw, const T* fs, const T* g_w, const T* g_feat, const T* g_depth,
                  const T* g_op, const T* g_empty, int64_t parts, T* g_density, T* const* g_features,
                  double* g_dscale) {
    T* scratch = (T*)malloc((size_t)(3 * Rs->K + 1) * sizeof(T));
    if (!scratch) return 1;
    FN(bwd_range)(F, Rs, j0, j1, bg, bg_depth, w, raw, fs, g_w, g_feat, g_depth, g_op, g_empty, parts, g_density,
                  g_features, g_dscale, scratch);
    free(scratch);
    return 0;
}

/* A walking order of the n rays with directions delta (n, 3) that keeps rays of similar direction (neighbouring
   pixels of a camera) together, so the grid cells one ray reads are still in cache for the next: the unit
   directions are projected onto the plane across their mean, binned 64 x 64 and counting-sorted by the bins'
   Morton code (the order changes nothing but the rounding of gradient sums). Returns 1 (order untouched) if
   its scratch cannot be allocated, else 0. */
int FN(march_order)(const T* delta, int64_t n, int64_t* order) {
    double* pq = (double*)malloc((size_t)(2 * n + 1) * sizeof(double));
    int64_t* keys = (int64_t*)malloc((size_t)(n + 1) * sizeof(int64_t));
    if (!pq || !keys) {
        free(pq);
        free(keys);
        return 1;
    }
    double m[3] = {0, 0, 0}, u[3], v[3], lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
    for (int64_t j = 0; j < n; ++j) {
        const T* d = delta + 3 * j;
        const double len = sqrt((double)d[0] * d[0] + (double)d[1] * d[1] + (double)d[2] * d[2]);
        if (len > 0)
            for (int a = 0; a < 3; ++a) m[a] += d[a] / len;
    }
    const double ml = sqrt(m[0] * m[0] + m[1] * m[1] + m[2] * m[2]);
    if (ml > 0) {
        for (int a = 0; a < 3; ++a) m[a] /= ml;
    } else {
        m[0] = 0, m[1] = 0, m[2] = 1;
    }
    const double e[3] = {fabs(m[0]) < 0.9 ? 1.0 : 0.0, fabs(m[0]) < 0.9 ? 0.0 : 1.0, 0.0}; /* an axis across m */
    const double em = e[0] * m[0] + e[1] * m[1];
    for (int a = 0; a < 3; ++a) u[a] = e[a] - em * m[a];
    const double ul = sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
    for (int a = 0; a < 3; ++a) u[a] /= ul;
    v[0] = m[1] * u[2] - m[2] * u[1];
    v[1] = m[2] * u[0] - m[0] * u[2];
    v[2] = m[0] * u[1] - m[1] * u[0];
    for (int64_t j = 0; j < n; ++j) {
        const T* d = delta + 3 * j;
        const double len = sqrt((double)d[0] * d[0] + (double)d[1] * d[1] + (double)d[2] * d[2]);
        for (int a = 0; a < 2; ++a) {
            const double* b = a ? v : u;
            const double c = len > 0 ? (d[0] * b[0] + d[1] * b[1] + d[2] * b[2]) / len : 0;
            pq[2 * j + a] = c;
            if (c < lo[a]) lo[a] = c;
            if (c > hi[a]) hi[a] = c;
        }
    }
    int64_t count[4097] = {0};
    for (int64_t j = 0; j < n; ++j) {
        int64_t bin[2];
        for (int a = 0; a < 2; ++a) {
            const double span = hi[a] - lo[a];
            const double t = span > 0 ? (pq[2 * j + a] - lo[a]) / span * 64 : 0;
            bin[a] = t >= 0 && t < 64 ? (int64_t)t : (t >= 64 ? 63 : 0); /* NaN to bin 0 */
        }
        int64_t k = 0;
        for (int bit = 0; bit < 6; ++bit)
            k |= (((bin[0] >> bit) & 1) << (2 * bit)) | (((bin[1] >> bit) & 1) << (2 * bit + 1));
        keys[j] = k;
        ++count[k + 1];
    }
    for (int k = 0; k < 4096; ++k) count[k + 1] += count[k];
    for (int64_t j = 0; j < n; ++j) order[count[keys[j]]++] = j;
    free(pq);
    free(keys);
    return 0;
}

/* OccupancyGrid.sample_range (sjc_engine/occupancy.py) for rays [0, R): per ray the samples that can meet an
   occupied coarse cell of bits (g^3, cells of `cell` voxels, n grid nodes), as first[r] and kept[r]; the same
   float64 arithmetic in the same order as the torch code, so the same integers. No occupied cell: 0 and 0. */
void FN(march_range)(const T* start, const T* delta, const int64_t* counts, int64_t R, const uint8_t* bits,
                     int64_t g, int64_t cell, int64_t n, int64_t* first, int64_t* kept) {
    int64_t lo_c[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, hi_c[3] = {-1, -1, -1};
    for (int64_t a = 0; a < g; ++a)
        for (int64_t b = 0; b < g; ++b)
            for (int64_t c = 0; c < g; ++c)
                if (bits[(a * g + b) * g + c]) {
                    const int64_t ijk[3] = {a, b, c};
                    for (int x = 0; x < 3; ++x) {
                        if (ijk[x] < lo_c[x]) lo_c[x] = ijk[x];
                        if (ijk[x] > hi_c[x]) hi_c[x] = ijk[x];
                    }
                }
    if (hi_c[0] < 0) {
        for (int64_t r = 0; r < R; ++r) first[r] = kept[r] = 0;
        return;
    }
    double lo[3], hi[3];
    for (int x = 0; x < 3; ++x) {
        const int64_t l = lo_c[x] * cell, h = (hi_c[x] + 1) * cell < n - 1 ? (hi_c[x] + 1) * cell : n - 1;
        lo[x] = l > 0 ? (double)l : -INFINITY; /* points clamp into cell 0 and n - 2 from outside */
        hi[x] = h < n - 1 ? (double)h : INFINITY;
    }
    for (int64_t r = 0; r < R; ++r) {
        double enter = -INFINITY, leave = INFINITY;
        for (int x = 0; x < 3; ++x) {
            const double s = start[3 * r + x], d = delta[3 * r + x];
            double e, l;
            if (d == 0) {
                const int inside = s >= lo[x] && s < hi[x];
                e = inside ? -INFINITY : INFINITY;
                l = inside ? INFINITY : -INFINITY;
            } else {
                const double a = (lo[x] - s) / d, b = (hi[x] - s) / d;
                e = m_min(a, b);
                l = m_max(a, b);
            }
            enter = x ? m_max(enter, e) : e;
            leave = x ? m_min(leave, l) : l;
        }
        const double top = (double)counts[r];
        double f = enter != enter ? 0.0 : floor(enter) - 1;
        f = m_min(f < 0 ? 0 : f, top);
        double end = leave != leave ? top : floor(leave) + 2;
        end = m_min(end < 0 ? 0 : end, top);
        const double k = end - f;
        first[r] = (int64_t)f;
        kept[r] = (int64_t)(k < 0 ? 0 : k);
    }
}

#undef MEXP
#endif
