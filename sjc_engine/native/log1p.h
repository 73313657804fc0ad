/* A vectorisable log1p for float, for march.c (the emptiness sums). */
#ifndef SJC_LOG1P_H
#define SJC_LOG1P_H
#include <stdint.h>

/* log(1 + x) for finite float x > -1 in plain arithmetic, branch-free so loops over it vectorise: u = 1 + x
   rounded, log u from its exponent and mantissa (m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m - 1) / (m + 1)) by
   its odd series to the 11th power, remainder < 1e-10 relative), times x / (u - 1) for the rounding of 1 + x (x
   itself where u == 1); within a few float ulps of log1pf. */
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

#endif
