"""Volume rendering of a :class:`~sjc_engine.field.VoxelField`: ray-box clipping, uniform marching, compositing.

As pals-ttic/sjc ``voxnerf/render.py``: each ray is clipped to the box ``[-bbox, bbox]^3`` (and to ``t >= 0``),
sampled at ``t_min + i * step`` for ``step = step_ratio * voxel_size`` (no jitter) while inside the box, and
composited with ``w_i = a_i * prod_{j<i} (1 - a_j)``, ``a_i = 1 - exp(-sigma_i * step)``. The background gets
``1 - sum_i w_i``. Features count only where ``w_i >= 1e-4`` (the reference's ``ray_march_weight_thres``).

No Python loop over rays or samples. Samples live in the reference's dense layout (rays that hit the box x the
longest ray's sample count, zero past each ray's end), so ``RenderOutput.weights`` and a mean over it (the
emptiness loss) match the reference. The density and every feature channel of all samples come from one
lookup (:meth:`VoxelField.lookup_rays`: a C kernel that walks each ray's cells once, or the torch fallback);
its backward scatters only samples with a non-zero gradient, so features of samples below the weight threshold
cost no scatter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sjc_engine.cameras import Camera
from sjc_engine.field import _NATIVE_TYPES, VoxelField, _call, _ptrs, _run, native_lib

WEIGHT_THRESHOLD = 1e-4
BG_DEPTH = 10.0


@dataclass
class RenderOutput:
    """What a render returns.

    Attributes:
        features: (R, C) composited features over the background, one row per ray.
        depth: (R,) or (H, W) expected distance along the ray, ``sum_i w_i t_i + (1 - opacity) * bg_depth``.
        opacity: (R,) or (H, W) ``sum_i w_i`` (= ``1 - exp(-sum_i sigma_i * step)``).
        weights: (S,) compositing weights of every sample, in the reference's zero-padded dense layout.
        image: (C, H, W) the features as an image (``render_image`` only).
        n_samples: samples inside the box (density and features are looked up for each).
        n_shaded: samples whose features are composited (``w >= 1e-4``); the others add no feature gradient.
    """

    features: Tensor
    depth: Tensor
    opacity: Tensor
    weights: Tensor
    image: Tensor | None = None
    n_samples: int = 0
    n_shaded: int = 0


def ray_box(origins: Tensor, dirs: Tensor, bbox: float) -> tuple[Tensor, Tensor]:
    """Entry and exit distances (R,) of rays through ``[-bbox, bbox]^3``, entry clipped at 0.

    A ray misses the box where ``t_max <= t_min``.
    """
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)  # (R, 3)
    t0 = (-bbox - origins) / safe
    t1 = (bbox - origins) / safe
    t_min = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)  # (R,)
    t_max = torch.maximum(t0, t1).amin(-1)  # (R,)
    return t_min, t_max


class _Composite(torch.autograd.Function):
    """The compositing of :func:`composite` in the C kernels (``comp_fwd``/``comp_bwd``, analytic backward)."""

    @staticmethod
    def forward(ctx: Any, tau: Tensor, feats: Tensor, t0: Tensor, step: float, counts: Tensor, thr: float) -> Any:
        suf = _NATIVE_TYPES[tau.dtype][1]
        n, k = tau.shape
        C = feats.shape[0]
        w, rgb = torch.empty_like(tau), tau.new_empty(n, C)
        opacity, depth = tau.new_empty(n), tau.new_empty(n)
        planes = _ptrs(list(feats))
        fn = getattr(native_lib(), f"comp_fwd_{suf}")
        ptrs = (w.data_ptr(), rgb.data_ptr(), opacity.data_ptr(), depth.data_ptr())
        cuts = _cuts(n, k)
        _run([_call(fn, tau.data_ptr(), planes, C, t0.data_ptr(), step, counts.data_ptr(), a, b, k, thr, *ptrs)
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
        g_tau, g_feats = torch.empty_like(tau), torch.empty_like(feats)
        fn = getattr(native_lib(), f"comp_bwd_{_NATIVE_TYPES[tau.dtype][1]}")
        planes, g_planes = _ptrs(list(feats)), _ptrs(list(g_feats))
        gw = g_w.data_ptr() if g_w is not None else None
        ins = (w.data_ptr(), gw, g_rgb.data_ptr(), g_op.data_ptr(), g_depth.data_ptr(), g_tau.data_ptr(), g_planes)
        cuts = _cuts(n, k)
        _run([_call(fn, tau.data_ptr(), planes, C, t0.data_ptr(), ctx.step, counts.data_ptr(), a, b, k, ctx.thr,
                    *ins) for a, b in zip(cuts, cuts[1:])])
        return g_tau, g_feats, None, None, None, None


def _cuts(n: int, k: int) -> list[int]:
    """Ray ranges for one or two threads."""
    return [0, n // 2, n] if torch.get_num_threads() > 1 and n * k >= 8192 else [0, n]


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
        weight_threshold: features of samples with a smaller weight are left out.

    Returns:
        ``weights`` (n, k) ``(1 - exp(-tau_i)) * exp(-sum_{j<i} tau_j)``, ``rgb`` (n, C) ``sum_i w_i f_i`` over
        samples with ``w_i >= weight_threshold``, ``opacity`` (n,) ``1 - exp(-sum_i tau_i)`` and ``depth`` (n,)
        ``sum_i w_i t_i``; all differentiable with respect to ``tau`` and ``feats``. One pass per ray in the C
        kernels where they are built (CPU, float32/float64), else the same in torch ops.
    """
    n, k = tau.shape
    if feats.dim() != 3 or feats.shape[1:] != tau.shape or t0.shape != (n,) or counts.shape != (n,):
        raise ValueError(
            f"composite wants tau (n, k), feats (C, n, k), t0 and counts (n,); got {tuple(tau.shape)}, "
            f"{tuple(feats.shape)}, {tuple(t0.shape)}, {tuple(counts.shape)}"
        )
    native = (
        tau.device.type == "cpu" and tau.dtype in _NATIVE_TYPES and feats.dtype == tau.dtype
        and native_lib() is not None
    )
    if native:
        args = (tau.contiguous(), feats.contiguous(), t0.detach().to(tau.dtype).contiguous(), float(step))
        return _Composite.apply(*args, counts.detach().long().contiguous(), float(weight_threshold))
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


def render_rays(
    field: VoxelField,
    origins: Tensor,
    dirs: Tensor,
    step_ratio: float = 0.5,
    bg_depth: float = BG_DEPTH,
    weight_threshold: float = WEIGHT_THRESHOLD,
) -> RenderOutput:
    """Render rays through ``field``.

    Args:
        field: the voxel field.
        origins: (R, 3) ray origins in world space.
        dirs: (R, 3) unit ray directions (``t`` is then a distance).
        step_ratio: march step as a fraction of the voxel size ``2 * bbox / N`` (reference: 0.5).
        bg_depth: depth given to the background's share (reference: 10).
        weight_threshold: features of samples with a smaller weight are left out (reference: 1e-4).

    Returns:
        :class:`RenderOutput` with ``features`` (R, C), ``depth`` (R,), ``opacity`` (R,), ``weights`` (S,),
        ``S`` = rays hitting the box x the longest one's sample count.
    """
    if origins.shape != dirs.shape or origins.dim() != 2 or origins.shape[-1] != 3:
        raise ValueError(f"origins and dirs must both be (R, 3), got {tuple(origins.shape)} and {tuple(dirs.shape)}")
    if step_ratio <= 0:
        raise ValueError(f"step_ratio must be > 0, got {step_ratio}")
    dev, dtype = field.density.device, field.density.dtype
    origins, dirs = origins.to(dev, dtype), dirs.to(dev, dtype)
    R, C, N = origins.shape[0], field.channels, field.grid_size
    step = step_ratio * field.voxel_size

    # 1. clip rays to the box; keep the ones that hit it
    t_min, t_max = ray_box(origins, dirs, field.bbox)
    counts = torch.ceil((t_max - t_min) / step).clamp(min=0).long()  # (R,) samples with i * step < t_max - t_min
    hit = (counts > 0).nonzero().squeeze(1)  # (n,)
    counts = counts[hit]
    n = hit.numel()
    k = int(counts.max()) if n else 0
    bg = field.background(dirs)  # (R, C)
    if n == 0 or k == 0:
        zeros = origins.new_zeros(R)
        return RenderOutput(bg, zeros + bg_depth, zeros, origins.new_zeros(0) + field.density.sum() * 0)

    # 2. samples: sample i of hit ray r sits at t_min[r] + i * step, in voxel index coordinates, in a dense
    # (n, k) layout (the reference's); the lookup skips, and zeroes, samples past each ray's end
    scale = (N - 1) / (2.0 * field.bbox)
    t0 = t_min[hit]  # (n,)
    start = (origins[hit] + t0[:, None] * dirs[hit] + field.bbox) * scale  # (n, 3)
    delta = dirs[hit] * (step * scale)  # (n, 3)
    ticks = torch.arange(k, device=dev, dtype=dtype)  # (k,)
    inside = ticks[None, :] < counts[:, None]  # (n, k), a prefix of each row

    # 3. densities and features in one pass over the samples (every channel per corner walk)
    raw, feats = field.lookup_rays(start, delta, counts, k)  # (n, k), (C, n, k)
    tau = field.activate(raw) * (inside * step)  # (n, k) optical thickness per sample, 0 past the ray's end

    # 4. compositing; features count only where the weight matters: the others get zero weight, hence a zero
    # feature gradient, and the lookup's backward skips their scatters
    weights, rgb, opacity, depth_hit = composite(tau, feats, t0, step, counts, weight_threshold)
    n_shaded = int((weights.detach() >= weight_threshold).sum())

    # 6. scatter back to all rays and blend the background
    acc = origins.new_zeros(R, C).index_copy(0, hit, rgb)  # (R, C)
    op = origins.new_zeros(R).index_copy(0, hit, opacity)  # (R,)
    dep = origins.new_zeros(R).index_copy(0, hit, depth_hit)  # (R,)
    features = acc + (1.0 - op)[:, None] * bg
    depth = dep + (1.0 - op) * bg_depth
    return RenderOutput(features, depth, op, weights.reshape(-1), None, int(counts.sum()), n_shaded)


def render_image(
    field: VoxelField, camera: Camera, step_ratio: float = 0.5, bg_depth: float = BG_DEPTH
) -> RenderOutput:
    """Render ``camera``'s view: ``image`` (C, H, W), ``depth`` and ``opacity`` (H, W), ``weights`` (S,)."""
    origins, dirs = camera.rays(device=field.density.device, dtype=field.density.dtype)  # (H, W, 3) each
    H, W = camera.height, camera.width
    out = render_rays(field, origins.reshape(-1, 3), dirs.reshape(-1, 3), step_ratio, bg_depth)
    out.image = out.features.T.reshape(field.channels, H, W)  # (C, H, W)
    out.depth = out.depth.reshape(H, W)
    out.opacity = out.opacity.reshape(H, W)
    return out
