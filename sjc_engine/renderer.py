"""Volume rendering of a :class:`~sjc_engine.field.VoxelField`: ray-box clipping, uniform marching, compositing.

As pals-ttic/sjc ``voxnerf/render.py``: each ray is clipped to the box ``[-bbox, bbox]^3`` (and to ``t >= 0``),
sampled at ``t_min + i * step`` for ``step = step_ratio * voxel_size`` (no jitter) while inside the box, and
composited with ``w_i = a_i * prod_{j<i} (1 - a_j)``, ``a_i = 1 - exp(-sigma_i * step)``. The background gets
``1 - sum_i w_i``.

Work is sparse, no Python loop over rays or samples: samples are packed (only those inside the box exist),
densities are computed for all of them first, and features are looked up only where ``w_i >= 1e-4``
(the reference's ``ray_march_weight_thres``); samples after a ray's transmittance falls below that are
therefore skipped too. ``RenderOutput.weights`` has the reference's dense layout (rays that hit the box x
the longest ray's sample count, zero-padded), so a mean over it (the emptiness loss) matches the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sjc_engine.cameras import Camera
from sjc_engine.field import VoxelField, trilinear_corners

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
        n_samples: samples inside the box whose density was computed.
        n_shaded: samples whose features were looked up (``w >= 1e-4``).
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


def _count_per_ray(keep: Tensor, counts: Tensor) -> Tensor:
    """Number of kept samples (n,) of each ray, for packed samples ``keep`` (S,) grouped by ``counts`` (n,)."""
    ends = torch.cumsum(keep.to(torch.long), 0)[torch.cumsum(counts, 0) - 1]  # (n,) kept up to each ray's end
    return torch.diff(ends, prepend=ends.new_zeros(1))


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
        weight_threshold: samples with a smaller weight get no feature lookup (reference: 1e-4).

    Returns:
        :class:`RenderOutput` with ``features`` (R, C), ``depth`` (R,), ``opacity`` (R,), ``weights`` (S,).
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

    # 2. packed samples: sample i of hit ray r sits at t_min[r] + i * step, in voxel index coordinates
    scale = (N - 1) / (2.0 * field.bbox)
    t0 = t_min[hit]  # (n,)
    start = (origins[hit] + t0[:, None] * dirs[hit] + field.bbox) * scale  # (n, 3)
    delta = dirs[hit] * (step * scale)  # (n, 3)
    mask = torch.arange(k, device=dev)[None, :] < counts[:, None]  # (n, k), a prefix of each row
    i_of = torch.arange(k, device=dev, dtype=dtype).expand(n, k)[mask]  # (S,) sample index along its ray
    u = torch.repeat_interleave(start, counts, dim=0)  # (S, 3)
    u.addcmul_(torch.repeat_interleave(delta, counts, dim=0), i_of[:, None]).clamp_(0, N - 1)
    idx, cw = trilinear_corners(u, N)  # (S, 8) each

    # 3. densities everywhere, then weights in the dense (n, k) layout
    sigma = field.activate(field.raw_density_at(idx, cw))  # (S,)
    tau = sigma.new_zeros(n, k).masked_scatter(mask, sigma * step)  # (n, k) optical thickness per sample
    cum = torch.cumsum(tau, dim=1)  # (n, k)
    trans = torch.exp(tau - cum)  # (n, k) transmittance before each sample
    weights = -torch.expm1(-tau) * trans  # (n, k)
    opacity = -torch.expm1(-cum[:, -1])  # (n,) = sum of weights

    # 4. features only where the weight matters
    w_packed = weights[mask]  # (S,)
    keep = w_packed.detach() >= weight_threshold  # (S,)
    if bool(keep.all()):  # common while the field is still cloudy: no need to copy
        shade_idx, shade_w, w_shade, per_ray = idx, cw, w_packed, counts
    else:
        shade = keep.nonzero().squeeze(1)  # (S2,)
        shade_idx, shade_w, w_shade = idx.index_select(0, shade), cw.index_select(0, shade), w_packed[shade]
        per_ray = _count_per_ray(keep, counts)  # (n,)
    feats = field.features_at(shade_idx, shade_w)  # (S2, C)
    rgb = torch.segment_reduce(w_shade[:, None] * feats, "sum", lengths=per_ray, axis=0)  # (n, C)

    # 5. depth: expected distance of the samples
    t_dense = t0[:, None] + step * torch.arange(k, device=dev, dtype=dtype)[None, :]  # (n, k)
    depth_hit = (weights * t_dense).sum(1)  # (n,)

    # 6. scatter back to all rays and blend the background
    acc = origins.new_zeros(R, C).index_copy(0, hit, rgb)  # (R, C)
    op = origins.new_zeros(R).index_copy(0, hit, opacity)  # (R,)
    dep = origins.new_zeros(R).index_copy(0, hit, depth_hit)  # (R,)
    features = acc + (1.0 - op)[:, None] * bg
    depth = dep + (1.0 - op) * bg_depth
    return RenderOutput(features, depth, op, weights.reshape(-1), None, int(idx.shape[0]), int(shade_idx.shape[0]))


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
