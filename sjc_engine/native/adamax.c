/* One Adamax step over one contiguous tensor, fused into a single pass over memory (torch's single-tensor
 * Adamax makes six). The arithmetic is torch.optim.Adamax's (no weight decay, not maximising), in the same
 * order and rounding, so finite results are bit-identical to it:
 *
 *   exp_avg = fma(1 - beta1, grad - exp_avg, exp_avg)   (torch's vectorised lerp: one fused multiply-add)
 *   exp_inf = max(exp_inf * beta2, |grad| + eps)         (NaN wins, as in torch.maximum)
 *   param   = param + (-clr * exp_avg) / exp_inf         (addcdiv; clr = lr / (1 - beta1^step))
 *
 * Every other product and sum is rounded on its own (no contraction), as in torch's kernels. Elements
 * [a, b) of the tensors. adamax_hw_fma() says whether this build has hardware FMA: without it fmaf is a slow
 * library call, and torch's own lerp does not fuse, so callers use torch then. */
#pragma GCC optimize("fp-contract=off")
#pragma STDC FP_CONTRACT OFF
#include <math.h>
#include <stdint.h>

int adamax_hw_fma(void) {
#ifdef __FMA__
    return 1;
#else
    return 0;
#endif
}

#define ADAMAX(T, SUF, FMA)                                                                                    \
void adamax_##SUF(T* restrict param, const T* restrict grad, T* restrict exp_avg, T* restrict exp_inf,        \
                  int64_t a, int64_t b, T w, T beta2, T eps, T neg_clr) {                                      \
    for (int64_t i = a; i < b; i++) {                                                                          \
        T g = grad[i];                                                                                         \
        T m = FMA(w, g - exp_avg[i], exp_avg[i]);                                                              \
        T u = exp_inf[i] * beta2, v = fabs(g) + eps;                                                           \
        int keep = (u != u) | (u > v);                                                                         \
        u = keep ? u : v;                                                                                      \
        exp_avg[i] = m;                                                                                        \
        exp_inf[i] = u;                                                                                        \
        param[i] = param[i] + neg_clr * m / u;                                                                 \
    }                                                                                                          \
}

ADAMAX(float, f32, fmaf)
ADAMAX(double, f64, fma)
