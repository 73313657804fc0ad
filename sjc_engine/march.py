"""The fused native renderer: one C pass per ray for the forward, three short ones for the backward (``march.c``).

:func:`sjc_engine.renderer.render_rays` clips the rays to the box (and, with an occupancy grid, to the occupied
cells' bounding box: :meth:`OccupancyGrid.sample_range`), then hands the hit rays to :func:`render_hit_rays` where
:func:`fused_supported` says so (CPU, float32/float64, the C kernels built, a plain
:class:`~sjc_engine.field.VoxelField`). Per ray the kernel marches the samples, skips those in empty coarse
cells and behind the transmittance floor (:mod:`sjc_engine.occupancy`), looks up the raw density, activates it
(``softplus(raw * exp(d_scale) + shift)``), weighs the samples in order up to the stop, looks up, activates and
adds the features only of those with ``w >= weight_threshold`` (a block of samples at a time), and blends the
background; nothing of size (rays x samples) is built but the dense
weights (the emptiness loss's layout) and what the backward reads (the raw density of every weighted sample, the
activated features of every shaded one), the latter only for a render a gradient can flow through (not under
``torch.no_grad``: turntables, previews, colours).
The backward recomputes the transmittance from the weights, walks each ray in reverse for the thickness
gradients and scatters straight into the grids' gradients (and ``d_scale``'s and the background's). Values and
gradients are the torch path's to float rounding (``tests/engine/test_march.py``).

Where a render shades enough samples (a random field's steps) the float32 3-channel field is read as node records
and the gradients are added into records (:mod:`sjc_engine.records`: a node's density and features side by side,
the same bits).

With more than one thread two Python threads split the forward by rays; in the backward one thread takes the
feature scatter of every ray and the density path of the first rays, the other the density path of the rest into
a density gradient of its own (added to the first's afterwards), so no two threads write the same gradient and
both get about half of the work (:func:`_density_cut`); into records, each thread takes both parts of half the rays
into records of its own (:func:`_ray_cut`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from sjc_engine.field import VoxelField
from sjc_engine.native import NATIVE_DTYPES, kernel, native_lib, native_supports, pointer_array
from sjc_engine.occupancy import OccupancyGrid
from sjc_engine.parallel import run_jobs, split_rays
from sjc_engine import records

__all__ = ["HitRays", "fused_supported", "render_hit_rays"]

DENSITY_PART, FEATURES_PART = 1, 2  # march_bwd's parts (MARCH_DENSITY, MARCH_FEATURES in march.c)
# A ray's backward cost per (looked-up, shaded) sample, in the density part and in the feature part (ns, fitted to
# the two parts' times in embedded runs at 64^3 / 4 views, early and late: 19 + 44 and 1.6 + 74); only their
# ratios matter (the two threads' shares, _density_cut)
DENSITY_COST, FEATURE_COST = (19.0, 44.0), (1.6, 74.0)
SORT_MIN_SAMPLES = 1 << 19  # dense samples from which rays are walked in direction order (HitRays.sort): 7% faster
# at 100^3 / 64 x 64, none (or a little slower) at 64^3 / 32 x 32, where what the rays read stays in cache anyway


def _field_struct(ctype: Any) -> type[ctypes.Structure]:
    """The ctypes twin of march.c's ``field_t`` for the element type ``ctype``."""
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    return type("FieldT", (ctypes.Structure,), {"_fields_": [
        ("n", i64), ("density", vp), ("feats", vp), ("C", i64), ("scale", ctype), ("shift", ctype),
        ("step", ctype), ("tanh_act", i64), ("thr", ctype), ("occ", vp), ("g", i64), ("coarse", vp),
        ("t_stop", ctype), ("empty_scale", ctype), ("aos", vp), ("g_aos", vp)]})


class _RaysT(ctypes.Structure):
    """The ctypes twin of march.c's ``rays_t`` (pointers, then the dense weights' row length)."""

    _fields_ = [("start", ctypes.c_void_p), ("delta", ctypes.c_void_p), ("t0", ctypes.c_void_p),
                ("first", ctypes.c_void_p), ("kept", ctypes.c_void_p), ("ray", ctypes.c_void_p),
                ("order", ctypes.c_void_p), ("K", ctypes.c_int64)]


_STRUCTS = {dtype: _field_struct(ctypes.c_float if c == "float" else ctypes.c_double)
            for dtype, (c, _) in NATIVE_DTYPES.items()}


@dataclass
class HitRays:
    """The rays that hit the box, in the renderer's layout (all detached, contiguous, one device and dtype).

    Attributes:
        ray: (n,) int64 index of each hit ray in the batch.
        start: (n, 3) first kept sample of each ray, voxel index coordinates.
        delta: (n, 3) step between samples, voxel index coordinates.
        t0: (n,) distance of the first kept sample.
        first: (n,) int64 dense-layout index of the first kept sample, or None (0 for every ray).
        kept: (n,) int64 samples kept per ray (``first + kept <= K``).
        K: samples per row of the dense weights (the longest ray's count).
        order: (n,) int64 order the kernels walk the rays in (:meth:`sort`), or None (as given).
    """

    ray: Tensor
    start: Tensor
    delta: Tensor
    t0: Tensor
    first: Tensor | None
    kept: Tensor
    K: int
    order: Tensor | None = None

    def sort(self) -> None:
        """Set :attr:`order` to walk rays of similar direction one after the other (``march_order``: cells one
        ray reads are then still in cache for the next; a camera's rays come in rows, whose neighbours below
        are a row away)."""
        order = torch.empty_like(self.ray)  # (n,)
        if not kernel("march_order", self.delta.dtype)(self.delta.data_ptr(), self.ray.shape[0], order.data_ptr()):
            self.order = order

    def struct(self) -> _RaysT:
        """The ``rays_t`` for the kernels (the tensors must stay alive while it is used)."""
        first = self.first.data_ptr() if self.first is not None else None
        return _RaysT(self.start.data_ptr(), self.delta.data_ptr(), self.t0.data_ptr(), first,
                      self.kept.data_ptr(), self.ray.data_ptr(),
                      self.order.data_ptr() if self.order is not None else None, self.K)


def fused_supported(field: VoxelField, *tensors: Tensor) -> bool:
    """Whether :func:`render_hit_rays` can render ``field``: the C kernels built, the field's tensors and
    ``tensors`` float32/float64 on the CPU, at most ``march_max_channels()`` channels, and the field's
    activations :class:`VoxelField`'s own (a subclass overriding them takes the torch path)."""
    if not native_supports(field.density, field.features, field.d_scale, *tensors):
        return False
    lib = native_lib()
    return (
        field.channels <= lib.march_max_channels()
        and field.grid_size**3 < 2**31  # march.c's flat node indices are 32-bit
        and type(field).activate is VoxelField.activate
        and type(field).activate_features is VoxelField.activate_features
    )


@dataclass(frozen=True)
class _Settings:
    """What the kernels need of the field and the render besides its tensors."""

    N: int
    C: int
    shift: float
    tanh: bool
    step: float
    threshold: float
    bg_depth: float
    empty_scale: float = 0.0  # > 0: each hit ray's emptiness sum, sum_i log(1 + empty_scale w_i), is made
    saved: bool = True  # the forward keeps what the backward reads (False: no gradient can flow, nothing kept)


def _field_args(
    dtype: torch.dtype, scale: float, cfg: _Settings, grids: tuple[Tensor, Tensor] | None = None,
    grid: OccupancyGrid | None = None,
) -> tuple[Any, list[Any]]:
    """``field_t`` for elements of ``dtype`` and the objects it points into (to keep alive while it is used).

    Args:
        dtype: torch.float32 or torch.float64.
        scale: ``exp(d_scale)``.
        cfg: the render's settings.
        grids: the (detached) density (1, N, N, N) and features (C, N, N, N) for the forward; None (default) for
            the backward, which reads neither.
        grid: the occupancy grid to skip samples by (forward), or None (default): every sample looked up.
    """
    keep: list[Any] = []
    density = planes = occ = coarse = None
    if grids is not None:
        dens = grids[0].reshape(-1).contiguous()  # (N^3,)
        feats = grids[1].reshape(cfg.C, -1).contiguous()  # (C, N^3)
        arr = pointer_array(feats)
        density, planes = dens.data_ptr(), ctypes.cast(arr, ctypes.c_void_p)
        keep += [dens, feats, arr]
    if grid is not None:
        bits = grid.bits.cpu().contiguous()  # (G, G, G)
        cells = torch.arange(cfg.N) // grid.cell  # (N,) int64 coarse cell of each fine cell index
        occ, coarse = bits.data_ptr(), cells.data_ptr()
        keep += [bits, cells]
    s = _STRUCTS[dtype](
        n=cfg.N, density=density, feats=planes, C=cfg.C, scale=scale, shift=cfg.shift, step=cfg.step,
        tanh_act=int(cfg.tanh), thr=cfg.threshold, occ=occ, g=grid.coarse_size if grid is not None else 0,
        coarse=coarse, t_stop=grid.stop_transmittance if grid is not None else 0.0, empty_scale=cfg.empty_scale,
    )
    return s, keep


class _FusedRender(torch.autograd.Function):
    """``march_fwd``/``march_bwd`` as one autograd node: (density, features, d_scale, bg) in; features (R, C),
    depth (R,), opacity (R,), dense weights (n, K), per-ray counts (n, 2) and emptiness sums (n,) (empty unless
    ``cfg.empty_scale > 0``) out."""

    @staticmethod
    def forward(ctx: Any, density: Tensor, features: Tensor, d_scale: Tensor, bg: Tensor, rays: HitRays,
                cfg: _Settings, grid: OccupancyGrid | None, box: Tensor | None) -> Any:
        dtype = bg.dtype
        n, K, R = rays.ray.shape[0], rays.K, bg.shape[0]
        scale = float(d_scale.detach().exp())
        recs = None
        if box is not None:  # the field as node records (sjc_engine/records.py)
            recs = records.pack(density.detach(), features.detach(), box)
            fld, keep = _field_args(dtype, scale, cfg, None, grid)
            fld.aos = recs.data_ptr()
        else:
            fld, keep = _field_args(dtype, scale, cfg, (density.detach(), features.detach()), grid)
        rs = rays.struct()
        w = bg.new_empty(n, K)  # dense weights
        kept = (n, K) if cfg.saved else (0, 0)  # for the backward only: raw density where w != 0, activated
        raw, fs = bg.new_empty(kept), bg.new_empty(*kept, cfg.C)  # features where w >= threshold
        feat = bg.detach().clone()  # (R, C): rays that miss the box see the background
        depth = bg.new_full((R,), cfg.bg_depth)  # (R,)
        opacity = bg.new_zeros(R)  # (R,)
        stats = torch.empty(n, 2, dtype=torch.int64)  # (n, 2) looked up, shaded
        empty = bg.new_empty(n if cfg.empty_scale > 0 else 0)  # (n,) emptiness sums
        bgc = bg.detach().contiguous()
        fn = kernel("march_fwd", dtype)
        outs = (w.data_ptr(), raw.data_ptr() if cfg.saved else None, fs.data_ptr() if cfg.saved else None,
                feat.data_ptr(), depth.data_ptr(), opacity.data_ptr(), stats.data_ptr(),
                empty.data_ptr() if empty.numel() else None)
        cuts = split_rays(n, K)
        run_jobs([partial(fn, ctypes.byref(fld), ctypes.byref(rs), a, b, bgc.data_ptr(), cfg.bg_depth, *outs)
                  for a, b in zip(cuts, cuts[1:])])
        del keep
        if recs is not None:
            records.release(recs)
        ctx.save_for_backward(w, raw, fs, bgc, opacity, stats)
        ctx.rays, ctx.cfg, ctx.scale, ctx.box = rays, cfg, scale, box
        ctx.mark_non_differentiable(stats)
        ctx.set_materialize_grads(False)  # unused outputs' gradients stay None (no zero (n, K) weights gradient)
        return feat, depth, opacity, w, stats, empty

    @staticmethod
    def backward(ctx: Any, g_feat: Tensor | None, g_depth: Tensor | None, g_op: Tensor | None,
                 g_w: Tensor | None, _g_stats: Tensor | None, g_empty: Tensor | None) -> Any:
        w, raw, fs, bg, opacity, stats = ctx.saved_tensors
        rays, cfg = ctx.rays, ctx.cfg
        n, R, C, N, dtype = w.shape[0], bg.shape[0], cfg.C, cfg.N, w.dtype
        need_d = ctx.needs_input_grad[0] or ctx.needs_input_grad[2]
        need_f = ctx.needs_input_grad[1]
        g_feat = g_feat.contiguous() if g_feat is not None else bg.new_zeros(R, C)
        g_depth = g_depth.contiguous() if g_depth is not None else bg.new_zeros(R)
        g_op = g_op.contiguous() if g_op is not None else bg.new_zeros(R)
        g_w = g_w.contiguous() if g_w is not None else None
        g_empty = g_empty.contiguous() if g_empty is not None and g_empty.numel() else None
        g_bg = g_feat * (1.0 - opacity)[:, None] if ctx.needs_input_grad[3] else None  # (R, C)
        if not (need_d or need_f):
            return None, None, None, g_bg, None, None, None, None
        fld, keep = _field_args(dtype, ctx.scale, cfg)
        rs = rays.struct()
        # the gradient grids are zeroed by the job that scatters into them (with two threads, on both at once), or
        # written whole by the records' unpack
        g_dens = torch.empty(1, N, N, N, dtype=dtype) if need_d else None
        g_fts = torch.empty(C, N, N, N, dtype=dtype) if need_f else None
        g_ds = torch.zeros(n, dtype=torch.float64)  # (n,) d_scale's gradient per ray
        fplanes = pointer_array(g_fts) if g_fts is not None else None
        fn = kernel("march_bwd", dtype)
        ins = (bg.data_ptr(), cfg.bg_depth, w.data_ptr(), raw.data_ptr(), fs.data_ptr(),
               g_w.data_ptr() if g_w is not None else None, g_feat.data_ptr(), g_depth.data_ptr(), g_op.data_ptr(),
               g_empty.data_ptr() if g_empty is not None else None)

        def call(j0: int, j1: int, parts: int, g_density: Tensor | None = g_dens, f: Any = fld) -> int:  # rays [j0, j1)
            return fn(ctypes.byref(f), ctypes.byref(rs), j0, j1, *ins, parts,
                      g_density.data_ptr() if g_density is not None else None, fplanes, g_ds.data_ptr())

        g_late = bufs = None  # the density gradient of the second thread's rays; gradient records
        two = len(split_rays(n, rays.K)) > 2
        if ctx.box is not None and need_d and need_f and records.gradients_pay(N, stats):  # into gradient records,
            # one per thread (no two threads write one line), then into the planes (sjc_engine/records.py)
            cuts = [0, _ray_cut(stats, rays.order), n] if two else [0, n]
            bufs = [records.take_gradients(N) for _ in cuts[1:]]
            structs = [type(fld).from_buffer_copy(fld) for _ in bufs]
            for st, buf in zip(structs, bufs):
                st.g_aos = buf.data_ptr()
            jobs = [partial(call, a, b, DENSITY_PART + FEATURES_PART, g_dens, st)
                    for a, b, st in zip(cuts, cuts[1:], structs)]
        elif two and need_d and need_f:  # two threads
            cut = _density_cut(stats, rays.order)
            g_late = torch.empty_like(g_dens)

            def first() -> int:  # the feature scatter of every ray, the density path of walk positions [0, cut)
                g_fts.zero_()
                g_dens.zero_()
                return call(0, n, FEATURES_PART) + call(0, cut, DENSITY_PART)

            def second() -> int:  # the density path of [cut, n), into a gradient of its own
                g_late.zero_()
                return call(cut, n, DENSITY_PART, g_late)

            jobs = [first, second]
        else:
            def every() -> int:
                for grid in (g_dens, g_fts):
                    if grid is not None:
                        grid.zero_()
                return call(0, n, (DENSITY_PART if need_d else 0) + (FEATURES_PART if need_f else 0))

            jobs = [every]
        codes: list[int] = []
        run_jobs([lambda job=job: codes.append(job()) for job in jobs])
        del keep
        if any(codes):
            raise MemoryError("march_bwd could not allocate its scratch")
        if bufs is not None:
            records.unpack(bufs, N, ctx.box, g_dens, g_fts)
        if g_late is not None:
            g_dens += g_late
        g_density = g_dens if ctx.needs_input_grad[0] else None
        g_dscale = g_ds.sum().to(dtype).reshape(()) if ctx.needs_input_grad[2] else None
        return g_density, g_fts, g_dscale, g_bg, None, None, None, None


def _walk_costs(stats: Tensor, order: Tensor | None) -> tuple[Tensor, Tensor]:
    """Each ray's backward cost in the density part and in the feature part, (n,) each in walk order
    (:data:`DENSITY_COST`, :data:`FEATURE_COST` per sample of the forward's ``stats`` (n, 2), samples looked up and
    shaded; ``order``: the walk order, :meth:`HitRays.sort`, or None)."""
    looked, shaded = stats.double().unbind(1)  # (n,) each
    dens = DENSITY_COST[0] * looked + DENSITY_COST[1] * shaded
    feats = FEATURE_COST[0] * looked + FEATURE_COST[1] * shaded
    return (dens, feats) if order is None else (dens[order], feats[order])


def _ray_cut(stats: Tensor, order: Tensor | None) -> int:
    """Where the backward's two threads split the rays when each takes both parts of its rays (into gradient records
    of its own): walk positions [0, cut) and [cut, n) cost about the same (:func:`_walk_costs`)."""
    dens, feats = _walk_costs(stats, order)
    cost = dens + feats  # (n,)
    return int((cost.cumsum(0) < float(cost.sum()) / 2).sum())


def _density_cut(stats: Tensor, order: Tensor | None) -> int:
    """Where the backward's two threads split the density part: the first thread takes the feature part of every ray
    and the density part of walk positions [0, cut), the second the density part of [cut, n), so both get about
    half of the work (:func:`_walk_costs`). The density part was three to four times the feature part (a default
    embedded run: 5.3 against 1.3 ms a step), so with a part each the feature thread waited for most of the
    backward."""
    dens, feats = _walk_costs(stats, order)
    half = float(dens.sum() + feats.sum()) / 2
    suffix = dens.flip(0).cumsum(0).flip(0)  # (n,) density cost of walk positions [jj, n), non-increasing
    return int((suffix > half).sum())  # positions [cut, n) cost at most half


def render_hit_rays(
    field: VoxelField, rays: HitRays, bg: Tensor, step: float, threshold: float, bg_depth: float,
    empty_scale: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, int, int]:
    """Render the hit rays of a batch of ``R`` rays through ``field`` with the fused kernels.

    Args:
        field: the field (see :func:`fused_supported`); its occupancy grid, if any, skips samples.
        rays: the rays that hit the box (:class:`HitRays`).
        bg: (R, C) background features of every ray of the batch (differentiable).
        step: march step in world units.
        threshold: features of samples with a smaller weight are left out.
        bg_depth: depth given to the background's share.
        empty_scale: > 0: also each hit ray's emptiness sum ``sum_i log(1 + empty_scale * w_i)`` (default 0: not
            made).

    Returns:
        ``features`` (R, C), ``depth`` (R,), ``opacity`` (R,), ``weights`` (n, K) dense and the emptiness sums
        (n,) (None unless asked for), differentiable with respect to the field's density, features, ``d_scale``
        and ``bg``; then the samples looked up and the samples shaded (``w >= threshold``).
    """
    if field.channels != bg.shape[1]:
        raise ValueError(f"bg must be (R, {field.channels}), got {tuple(bg.shape)}")
    saved = torch.is_grad_enabled() and any(t.requires_grad for t in (field.density, field.features, field.d_scale, bg))
    cfg = _Settings(field.grid_size, field.channels, field.density_shift, field.feature_activation == "tanh",
                    float(step), float(threshold), float(bg_depth), float(empty_scale), saved)
    if rays.order is None and rays.ray.shape[0] * rays.K >= SORT_MIN_SAMPLES:
        rays.sort()
    samples = float(rays.kept.sum())
    box = records.records_box(field, samples, cfg.saved)
    feat, depth, opacity, w, stats, empty = _FusedRender.apply(
        field.density, field.features, field.d_scale, bg.contiguous(), rays, cfg, field.occupancy_grid, box)
    looked, shaded = stats.sum(0).tolist()
    records.note_shaded(field, shaded, samples)
    return feat, depth, opacity, w, empty if empty_scale > 0 else None, int(looked), int(shaded)
