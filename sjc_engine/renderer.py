"""Volume rendering of a :class:`~sjc_engine.field.VoxelField`: ray-box clipping, uniform marching, compositing.

As pals-ttic/sjc ``voxnerf/render.py``: each ray is clipped to the box ``[-bbox, bbox]^3`` (and to ``t >= 0``),
sampled at ``t_min + i * step`` for ``step = step_ratio * voxel_size`` (no jitter) while inside the box, and
composited with ``w_i = a_i * prod_{j<i} (1 - a_j)``, ``a_i = 1 - exp(-sigma_i * step)``. The background gets
``1 - sum_i w_i``. Features count only where ``w_i >= 1e-4`` (the reference's ``ray_march_weight_thres``).

No Python loop over rays or samples. ``RenderOutput.weights`` keeps the reference's dense layout (rays that hit
the box x the longest ray's sample count, zero past each ray's end), so a mean over it (the emptiness loss)
matches the reference, and its gradient flows. With ``field.occupancy_grid`` set, samples in empty space and
behind opaque surfaces are skipped (:mod:`sjc_engine.occupancy`): zero thickness, no gradient; each ray is
first clipped to the samples that can meet the grid's occupied bounding box (:meth:`OccupancyGrid.sample_range`).

Two paths after the clipping (steps 1-2 below, torch ops), with the same values and gradients to rounding:

* fused (CPU, float32/float64, the C kernels built, a plain :class:`VoxelField`; :mod:`sjc_engine.march`):
  one C pass per ray marches, skips, looks up the raw density, activates, composites, looks up and activates
  the features only where the weight counts, and blends the background; the backward walks each ray back and
  scatters straight into the grids' gradients (and ``d_scale``'s and the background's). Nothing of size
  (rays x samples) is built but the dense weights and what the backward reads.
* torch (CUDA, ``SJC_NATIVE=0``, other fields; steps 3-6): the density and every feature channel of all samples
  from one lookup (:meth:`VoxelField.lookup_rays_skipping`: C kernels where built, else torch ops) whose
  backward scatters only samples with a non-zero gradient, then :func:`sjc_engine.composite.composite` (one pass
  per ray), the weights back into the dense layout, and the background blend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sjc_engine.cameras import Camera, camera_rays
from sjc_engine.composite import WEIGHT_THRESHOLD, composite
from sjc_engine.field import VoxelField
from sjc_engine.march import HitRays, fused_supported, render_hit_rays
from sjc_engine.native import kernel, native_supports

__all__ = ["BG_DEPTH", "WEIGHT_THRESHOLD", "RenderOutput", "clip_rays", "composite", "ray_box", "render_image",
           "render_images", "render_rays"]

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
        n_samples: samples looked up (inside the box; without the skipped ones when the field has an occupancy grid).
        n_shaded: samples whose features are composited (``w >= 1e-4``); the others add no feature gradient.
        emptiness: with an ``emptiness_scale``, the emptiness loss of ``weights``,
            ``mean(log(1 + emptiness_scale * weights))`` (:func:`sjc_engine.losses.emptiness_loss`), made by the
            fused kernels from the weighted samples alone (the zeros of the dense layout add nothing); else None.
        ray_emptiness: with an ``emptiness_scale``, its sum over each hit ray's row of ``weights`` (n,); else None.
    """

    features: Tensor
    depth: Tensor
    opacity: Tensor
    weights: Tensor
    image: Tensor | None = None
    n_samples: int = 0
    n_shaded: int = 0
    emptiness: Tensor | None = None
    ray_emptiness: Tensor | None = None


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


def clip_rays(
    origins: Tensor, dirs: Tensor, bbox: float, step: float, grid_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The rays that hit the box ``[-bbox, bbox]^3`` and their samples every ``step`` (world units).

    Returns ``hit`` (n,) int64 indices of the rays whose first sample lies inside the box, ``counts`` (n,) their
    samples (``i * step < t_max - t_min``), ``t0`` (n,) the distance of the first sample (:func:`ray_box`'s entry),
    and in the voxel index coordinates of an ``grid_size^3`` grid ``start`` (n, 3), the first sample, and
    ``delta`` (n, 3), the step between samples. One C pass (``ray_setup``: the same float arithmetic, so the same
    bits) where the kernels take the tensors, else torch ops.
    """
    scale = (grid_size - 1) / (2.0 * bbox)
    if native_supports(origins, dirs):
        R = origins.shape[0]
        o, d = origins.detach().contiguous(), dirs.detach().contiguous()  # (R, 3) each
        hit, counts = torch.empty(R, dtype=torch.long), torch.empty(R, dtype=torch.long)  # (R,) each, first n used
        t0, start, delta = o.new_empty(R), o.new_empty(R, 3), o.new_empty(R, 3)
        n = kernel("ray_setup", o.dtype)(o.data_ptr(), d.data_ptr(), R, bbox, step, scale, step * scale,
                                         hit.data_ptr(), counts.data_ptr(), t0.data_ptr(), start.data_ptr(),
                                         delta.data_ptr())
        return hit[:n], counts[:n], t0[:n], start[:n], delta[:n]
    t_min, t_max = ray_box(origins, dirs, bbox)
    counts = torch.ceil((t_max - t_min) / step).clamp(min=0).long()  # (R,) samples with i * step < t_max - t_min
    hit = (counts > 0).nonzero().squeeze(1)  # (n,)
    t0 = t_min[hit]  # (n,)
    start = (origins[hit] + t0[:, None] * dirs[hit] + bbox) * scale  # (n, 3)
    delta = dirs[hit] * (step * scale)  # (n, 3)
    return hit, counts[hit], t0, start, delta


def render_rays(
    field: VoxelField,
    origins: Tensor,
    dirs: Tensor,
    step_ratio: float = 0.5,
    bg_depth: float = BG_DEPTH,
    weight_threshold: float = WEIGHT_THRESHOLD,
    background: Tensor | None = None,
    emptiness_scale: float | None = None,
) -> RenderOutput:
    """Render rays through ``field``.

    Args:
        field: the voxel field.
        origins: (R, 3) ray origins in world space.
        dirs: (R, 3) unit ray directions (``t`` is then a distance).
        step_ratio: march step as a fraction of the voxel size ``2 * bbox / N`` (reference: 0.5).
        bg_depth: depth given to the background's share (reference: 10).
        weight_threshold: features of samples with a smaller weight are left out (reference: 1e-4).
        background: (R, C) rendered background features of each ray in place of the field's texture
            (default None: :meth:`VoxelField.background`).
        emptiness_scale: also the emptiness loss of the weights at this scale (``RenderOutput.emptiness`` and
            ``ray_emptiness``; default None: not made).

    Returns:
        :class:`RenderOutput` with ``features`` (R, C), ``depth`` (R,), ``opacity`` (R,), ``weights`` (S,),
        ``S`` = rays hitting the box x the longest one's sample count.
    """
    return _render_rays(field, origins, dirs, step_ratio, bg_depth, weight_threshold, background, emptiness_scale)[0]


def _render_rays(
    field: VoxelField, origins: Tensor, dirs: Tensor, step_ratio: float, bg_depth: float, weight_threshold: float,
    background: Tensor | None, emptiness_scale: float | None,
) -> tuple[RenderOutput, Tensor, Tensor]:
    """:func:`render_rays`'s output, and the hit rays (n,) and their sample counts (n,) of its :func:`clip_rays`
    (the rows of the dense weights, in order)."""
    if origins.shape != dirs.shape or origins.dim() != 2 or origins.shape[-1] != 3:
        raise ValueError(f"origins and dirs must both be (R, 3), got {tuple(origins.shape)} and {tuple(dirs.shape)}")
    if step_ratio <= 0:
        raise ValueError(f"step_ratio must be > 0, got {step_ratio}")
    if emptiness_scale is not None and not emptiness_scale > 0:
        raise ValueError(f"emptiness_scale must be > 0 (or None), got {emptiness_scale}")
    dev, dtype = field.density.device, field.density.dtype
    origins, dirs = origins.to(dev, dtype), dirs.to(dev, dtype)
    R, C, N = origins.shape[0], field.channels, field.grid_size
    step = step_ratio * field.voxel_size

    # 1-2. clip rays to the box, keep the ones that hit it; sample i of hit ray j sits at t0[j] + i * step, at
    # start[j] + i * delta[j] in voxel index coordinates, in a dense (n, k) layout (the reference's); the lookup
    # skips, and zeroes, samples past each ray's end
    hit, counts, t0, start, delta = clip_rays(origins, dirs, field.bbox, step, N)
    n = hit.numel()
    k = int(counts.max()) if n else 0
    if background is None:
        bg = field.background(dirs)  # (R, C)
    elif background.shape != (R, C):
        raise ValueError(f"background must be (R, C) = {(R, C)}, got {tuple(background.shape)}")
    else:
        bg = background.to(dev, dtype)
    if n == 0 or k == 0:
        zeros = origins.new_zeros(R)
        none = origins.new_zeros(0) + field.density.sum() * 0
        empty = none.sum() if emptiness_scale is not None else None
        out = RenderOutput(bg, zeros + bg_depth, zeros, none, None, 0, 0, empty, none if empty is not None else None)
        return out, hit, counts

    # with an occupancy grid, each ray's samples are clipped to the occupied cells' bounding box: samples
    # [first, first + kept) of a ray, the rest (skipped by the lookup anyway) cost nothing from here on
    first, kept, k_kept = None, counts, k
    if field.occupancy_grid is not None:
        first, kept = field.occupancy_grid.sample_range(start, delta, counts, N)  # (n,), (n,)
        k_kept = max(int(kept.max()), 1)
        start = start + first[:, None].to(dtype) * delta
        t0 = t0 + first.to(dtype) * step
    if fused_supported(field, start):  # 3-6 in one native pass per ray
        rays = HitRays(hit, start.contiguous(), delta.contiguous(), t0.contiguous(),
                       first.contiguous() if first is not None else None, kept.contiguous(), k)
        features, depth, op, weights, ray_empty, n_looked, n_shaded = render_hit_rays(
            field, rays, bg, step, weight_threshold, bg_depth, emptiness_scale or 0.0)  # 0: no sums
        empty = ray_empty.sum() / weights.numel() if ray_empty is not None else None
        out = RenderOutput(features, depth, op, weights.reshape(-1), None, n_looked, n_shaded, empty, ray_empty)
        return out, hit, counts
    ticks = torch.arange(k_kept, device=dev, dtype=dtype)  # (k_kept,)
    inside = ticks[None, :] < kept[:, None]  # (n, k_kept), a prefix of each row

    # 3. densities and features in one pass over the samples (every channel per corner walk)
    raw, feats, live = field.lookup_rays_skipping(start, delta, kept, k_kept, step)  # (n, k'), (C, n, k'), mask
    mask = inside if live is None else live  # skipped samples (empty space, behind opaque surfaces) have no say
    tau = field.activate(raw) * (mask * step)  # (n, k') optical thickness per sample, 0 past the ray's end

    # 4. compositing; features count only where the weight matters: the others get zero weight, hence a zero
    # feature gradient, and the lookup's backward skips their scatters
    weights, rgb, opacity, depth_hit = composite(tau, feats, t0, step, kept, weight_threshold)
    n_shaded = int((weights.detach() >= weight_threshold).sum())
    if first is not None:  # 5. weights back into the dense (n, k) layout (zero outside each ray's kept span)
        idx = (first[:, None] + ticks.long()[None, :]).clamp(max=k - 1)  # (n, k')
        weights = weights.new_zeros(n, k).scatter_add(1, idx, weights * inside)

    # 6. scatter back to all rays and blend the background
    acc = origins.new_zeros(R, C).index_copy(0, hit, rgb)  # (R, C)
    op = origins.new_zeros(R).index_copy(0, hit, opacity)  # (R,)
    dep = origins.new_zeros(R).index_copy(0, hit, depth_hit)  # (R,)
    features = acc + (1.0 - op)[:, None] * bg
    depth = dep + (1.0 - op) * bg_depth
    n_looked = int(kept.sum()) if live is None else int(live.sum())
    empty = ray_empty = None
    if emptiness_scale is not None:
        ray_empty = torch.log1p(emptiness_scale * weights).sum(1)  # (n,)
        empty = ray_empty.sum() / weights.numel()
    out = RenderOutput(features, depth, op, weights.reshape(-1), None, n_looked, n_shaded, empty, ray_empty)
    return out, hit, counts


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


def render_images(
    field: VoxelField,
    cameras: Sequence[Camera],
    step_ratio: float = 0.5,
    bg_depth: float = BG_DEPTH,
    backgrounds: Tensor | None = None,
    emptiness_scale: float | None = None,
    view_weights: bool = True,
) -> list[RenderOutput]:
    """Render several cameras' views in one batch of rays: what ``[render_image(field, c, ...) for c in cameras]``
    returns, to float rounding of the gradients' sums, for less work.

    The rays of every view go through one :func:`render_rays` call (one native pass, one backward that
    scatters into one gradient of each grid instead of one per view, the fixed costs around the kernels paid
    once). Each view's ``weights`` are its own rays' rows of the batch's dense layout cut to its own longest
    ray (the columns past it are zeros), so they are exactly the ones :func:`render_image` gives: a mean over
    them (the emptiness loss) is the view's own. Their ``n_samples`` and ``n_shaded`` stay 0 (the batch's
    counts are not split by view).

    ``backgrounds`` (V, C): one flat background colour (rendered features) per view in place of the field's
    texture (default None: the texture). ``emptiness_scale``: each view's ``emptiness`` too, the emptiness loss of
    its ``weights`` (made from the batch's per-ray sums; default None: not made). ``view_weights=False`` leaves
    each view's ``weights`` empty (0,): cutting them out of the batch copies every weight (1 ms for 4 views of
    32 x 32 over a 64^3 field, timed alone), which a caller that takes the ``emptiness`` does not need.
    """
    if not cameras:
        return []
    dev, dtype = field.density.device, field.density.dtype
    if len({(cam.height, cam.width) for cam in cameras}) == 1:
        origins, dirs = (t.reshape(-1, 3) for t in camera_rays(list(cameras), dev, dtype))  # (sum_v H_v W_v, 3)
    else:
        rays = [cam.rays(device=dev, dtype=dtype) for cam in cameras]  # (H, W, 3) origins and directions each
        origins = torch.cat([o.reshape(-1, 3) for o, _ in rays])  # (sum_v H_v W_v, 3)
        dirs = torch.cat([d.reshape(-1, 3) for _, d in rays])
    per_ray = None
    if backgrounds is not None:
        if backgrounds.shape != (len(cameras), field.channels):
            raise ValueError(f"backgrounds must be (V, C) = {(len(cameras), field.channels)}, "
                             f"got {tuple(backgrounds.shape)}")
        sizes = torch.tensor([cam.height * cam.width for cam in cameras], device=backgrounds.device)
        per_ray = backgrounds.repeat_interleave(sizes, dim=0)  # (sum_v H_v W_v, C)
    out, hit, counts = _render_rays(field, origins, dirs, step_ratio, bg_depth, WEIGHT_THRESHOLD, per_ray,
                                    emptiness_scale)
    ends = torch.tensor([0] + [cam.height * cam.width for cam in cameras]).cumsum(0)  # (V + 1,) views' first rays
    rows = torch.searchsorted(hit.cpu(), ends).tolist()  # each view's first row of the dense weights (hit: sorted)
    blocks = []  # each view's block of the batch's dense weights: first row, rows, columns
    for h0, h1 in zip(rows, rows[1:]):
        blocks.append((h0, h1 - h0, int(counts[h0:h1].max()) if h1 > h0 else 0))
    K = out.weights.numel() // max(rows[-1], 1)  # the batch's dense row length
    if K and view_weights:
        weights_of = _ViewWeights.apply(out.weights.reshape(-1, K), blocks)  # (n_v * k_v,) each
    else:  # not asked for, or no ray hits the box
        weights_of = [out.weights[:0]] * len(cameras)
    views, r0 = [], 0
    for cam, weights, (h0, n_v, k_v) in zip(cameras, weights_of, blocks):
        H, W = cam.height, cam.width
        r1 = r0 + H * W
        empty = ray_empty = None
        if out.ray_emptiness is not None:  # the view's rays' sums over its own (n_v, k_v) layout
            ray_empty = out.ray_emptiness[h0 : h0 + n_v]  # (n_v,)
            empty = ray_empty.sum() / (n_v * k_v) if n_v * k_v else ray_empty.sum()
        views.append(RenderOutput(
            features=out.features[r0:r1], depth=out.depth[r0:r1].reshape(H, W), opacity=out.opacity[r0:r1].reshape(H, W),
            weights=weights, image=out.features[r0:r1].T.reshape(field.channels, H, W),  # (C, H, W)
            emptiness=empty, ray_emptiness=ray_empty,
        ))
        r0 = r1
    return views


class _ViewWeights(torch.autograd.Function):
    """Each view's block of a batch's dense weights (n, K) (first row, rows n_v, columns k_v), as a flat copy
    (n_v * k_v,); the backward puts every view's gradient into one (n, K) gradient (autograd's slices would make
    and add up one (n, K) gradient per view: a fifth of a 64^3 step at 4 views)."""

    @staticmethod
    def forward(ctx: Any, dense: Tensor, blocks: list[tuple[int, int, int]]) -> tuple[Tensor, ...]:
        ctx.blocks, ctx.shape = blocks, dense.shape
        ctx.set_materialize_grads(False)
        outs = []
        for h0, n_v, k_v in blocks:
            part = dense.new_empty(n_v, k_v)
            part.copy_(dense[h0 : h0 + n_v, :k_v])
            outs.append(part.reshape(-1))  # (n_v * k_v,)
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> Any:
        g_dense = None
        for (h0, n_v, k_v), g in zip(ctx.blocks, grads):
            if g is None:
                continue
            if g_dense is None:
                g_dense = g.new_zeros(ctx.shape)  # (n, K)
            g_dense[h0 : h0 + n_v, :k_v] = g.reshape(n_v, k_v)
        return g_dense, None
