"""Volume compositing of rays in the dense (n, k) sample layout: weights, features, opacity and depth.

As pals-ttic/sjc ``voxnerf/render.py``: ``w_i = (1 - exp(-tau_i)) * exp(-sum_{j<i} tau_j)`` with
``tau_i = sigma_i * step``, features counted only where ``w_i >= 1e-4`` (the reference's
``ray_march_weight_thres``). Two implementations with the same values and gradients: the C kernels
(``comp_fwd``/``comp_bwd`` in ``sjc_engine/native/composite.c``: one pass per ray, analytic backward; CPU,
float32/float64, where built) and torch ops (:func:`composite_torch`, any device; the fallback). The renderer
composites here only off its fused path (:mod:`sjc_engine.march`, which composites inside its own kernel): on
CUDA, with ``SJC_NATIVE=0``, or for fields the fused kernel does not take.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor

from sjc_engine.native import kernel, native_supports, pointer_array
from sjc_engine.parallel import run_jobs, split_rays

WEIGHT_THRESHOLD = 1e-4


class _NativeComposite(torch.autograd.Function):
    """The compositing of :func:`composite` in the C kernels (``comp_fwd``/``comp_bwd``, analytic backward)."""

    @staticmethod
    def forward(ctx: Any, tau: Tensor, feats: Tensor, t0: Tensor, step: float, counts: Tensor, thr: float) -> Any:
        n, k = tau.shape
        C = feats.shape[0]
        w, rgb = torch.empty_like(tau), tau.new_empty(n, C)  # (n, k), (n, C)
        opacity, depth = tau.new_empty(n), tau.new_empty(n)  # (n,) each
        planes = pointer_array(feats)  # C planes (n, k)
        fn = kernel("comp_fwd", tau.dtype)
        ptrs = (w.data_ptr(), rgb.data_ptr(), opacity.data_ptr(), depth.data_ptr())
        cuts = split_rays(n, k)
        run_jobs([partial(fn, tau.data_ptr(), planes, C, t0.data_ptr(), step, counts.data_ptr(), a, b, k, thr, *ptrs)
                  for a, b in zip(cuts, cuts[1:])])
        ctx.save_for_backward(tau, feats, t0, counts, w)
        ctx.step, ctx.thr = step, thr
        return w, rgb, opacity, depth

    @staticmethod
    def backward(ctx: Any, g_w: Tensor | None, g_rgb: Tensor | None, g_op: Tensor | None, g_depth: Tensor | None):
        tau, feats, t0, counts, w = ctx.saved_tensors
        n, k = tau.shape
        C = feats.shape[0]
        g_w = g_w.contiguous() if g_w is not None else None
        g_rgb = g_rgb.contiguous() if g_rgb is not None else tau.new_zeros(n, C)
        g_op = g_op.contiguous() if g_op is not None else tau.new_zeros(n)
        g_depth = g_depth.contiguous() if g_depth is not None else tau.new_zeros(n)
        g_tau, g_feats = torch.empty_like(tau), torch.empty_like(feats)  # (n, k), (C, n, k)
        fn = kernel("comp_bwd", tau.dtype)
        planes, g_planes = pointer_array(feats), pointer_array(g_feats)
        gw = g_w.data_ptr() if g_w is not None else None
        ins = (w.data_ptr(), gw, g_rgb.data_ptr(), g_op.data_ptr(), g_depth.data_ptr(), g_tau.data_ptr(), g_planes)
        cuts = split_rays(n, k)
        run_jobs([partial(fn, tau.data_ptr(), planes, C, t0.data_ptr(), ctx.step, counts.data_ptr(), a, b, k,
                          ctx.thr, *ins) for a, b in zip(cuts, cuts[1:])])
        return g_tau, g_feats, None, None, None, None


def composite(
    tau: Tensor, feats: Tensor, t0: Tensor, step: float, counts: Tensor, weight_threshold: float = WEIGHT_THRESHOLD
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Alpha compositing of ``n`` rays of ``k`` samples (dense layout, zero past each ray's ``counts``).

    Args:
        tau: (n, k) optical thickness ``sigma_i * step`` of each sample; ignored (no gradient) past the end.
        feats: (C, n, k) features of each sample.
        t0: (n,) distance of each ray's first sample; sample ``i`` sits at ``t0 + i * step``.
        step: distance between samples.
        counts: (n,) int64 samples of each ray.
        weight_threshold: features of samples with a smaller weight are left out (reference: 1e-4).

    Returns:
        ``weights`` (n, k) ``(1 - exp(-tau_i)) * exp(-sum_{j<i} tau_j)``, ``rgb`` (n, C) ``sum_i w_i f_i`` over
        samples with ``w_i >= weight_threshold``, ``opacity`` (n,) ``1 - exp(-sum_i tau_i)`` and ``depth`` (n,)
        ``sum_i w_i t_i``; all differentiable with respect to ``tau`` and ``feats``. One pass per ray in the C
        kernels where they are built (CPU, float32/float64), else :func:`composite_torch`.
    """
    n, k = tau.shape
    if feats.dim() != 3 or feats.shape[1:] != tau.shape or t0.shape != (n,) or counts.shape != (n,):
        raise ValueError(
            f"composite wants tau (n, k), feats (C, n, k), t0 and counts (n,); got {tuple(tau.shape)}, "
            f"{tuple(feats.shape)}, {tuple(t0.shape)}, {tuple(counts.shape)}"
        )
    if native_supports(tau, feats):
        args = (tau.contiguous(), feats.contiguous(), t0.detach().to(tau.dtype).contiguous(), float(step))
        return _NativeComposite.apply(*args, counts.detach().long().contiguous(), float(weight_threshold))
    return composite_torch(tau, feats, t0, step, counts, weight_threshold)


def composite_torch(
    tau: Tensor, feats: Tensor, t0: Tensor, step: float, counts: Tensor, weight_threshold: float = WEIGHT_THRESHOLD
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The torch path of :func:`composite` (same arguments and results, any device, autograd backward)."""
    ticks = torch.arange(tau.shape[1], device=tau.device, dtype=tau.dtype)  # (k,)
    tau = tau * (ticks[None, :] < counts[:, None])  # (n, k) samples past the end have no say (nor gradient)
    cum = torch.cumsum(tau, dim=1)  # (n, k)
    trans = torch.exp(tau - cum)  # (n, k) transmittance before each sample
    weights = -torch.expm1(-tau) * trans  # (n, k)
    opacity = -torch.expm1(-cum[:, -1])  # (n,) = sum of weights
    keep = weights.detach() >= weight_threshold  # (n, k)
    w_shade = weights * keep  # (n, k)
    rgb = (feats * w_shade).sum(-1).T  # (n, C)
    t_dense = t0[:, None] + step * ticks[None, :]  # (n, k)
    depth = (weights * t_dense).sum(1)  # (n,)
    return weights, rgb, opacity, depth
