"""Trilinear lookups of flattened voxel grids, at points and at evenly spaced samples along rays.

Grid convention (as :class:`~sjc_engine.field.VoxelField`): a grid is (C, M) values, ``M = n^3``, the value at
node ``(i, j, k)`` (world point ``(x_i, y_j, z_k)``) at flat index ``(i * n + j) * n + k``. Points are given in
voxel index coordinates ``u = (x + bbox) / (2 * bbox) * (n - 1)`` and clamped into ``[0, n - 1]``; nodes sit on
the box corners, like ``F.grid_sample(align_corners=True)``. These lookups replace ``F.grid_sample`` (3D), whose
CPU backward is slow.

Two implementations of :func:`trilinear_rays` (and :func:`trilinear_points`), both with an analytic backward
(gradients with respect to the grids, not the sample positions) and the same values and gradients:

* native (CPU, float32/float64; :mod:`sjc_engine.native`, ``trilinear.c``): per sample the cell and weights
  are computed on the fly (no (P, 8) index/weight tensors) and every channel is gathered (forward) or
  scattered (backward); consecutive samples of a ray in the same cell share one corner load (forward) and one
  scatter (backward). With more than one torch thread two Python threads split rays (forward) or channels
  (backward).
* torch (any device; the fallback, :func:`trilinear_rays_torch`): :func:`trilinear_corners`, then
  :func:`trilinear_multi`: ``F.embedding_bag`` over a channels-last table (one gather for every channel) and
  one ``scatter_add_`` per channel.

With a :class:`~sjc_engine.occupancy.SkipRule` both skip samples in empty coarse cells and samples behind a ray's
transmittance floor (see :mod:`sjc_engine.occupancy`): no lookup, zero value, no gradient, and a live mask out.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sjc_engine.native import kernel, native_supports, pointer_array
from sjc_engine.occupancy import SkipRule
from sjc_engine.parallel import MIN_SPLIT, run_jobs, split_rays, workers


def corner_offsets(n: int) -> list[int]:
    """Flat offsets of a cell's 8 corners in an ``n^3`` grid, order ``(a, b, c)`` over x, y, z in {0, 1}."""
    return [a * n * n + b * n + c for a in (0, 1) for b in (0, 1) for c in (0, 1)]


_CHUNK = 32768  # points per block in trilinear_corners: keeps the (chunk, 8) outputs in cache while written


def trilinear_corners(u: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The 8 cell corners and trilinear weights of points given in voxel index coordinates.

    Args:
        u: (P, 3) coordinates in index units, ``u = (x + bbox) / (2 * bbox) * (n - 1)``, inside ``[0, n - 1]``.
        n: grid size per side.

    Returns:
        ``idx`` (P, 8) int32 flat indices ``(i * n + j) * n + k`` into an ``n^3`` grid, and ``w`` (P, 8) weights
        (rows sum to 1), corners in the order of :func:`corner_offsets`.

    The flat base index is computed in ``u``'s floating dtype (exact: integers below ``2^24``) and converted
    once; the (P, 8) outputs are filled block by block, so their strided writes stay in cache.
    """
    if n**3 >= 2**31:
        raise ValueError(f"grid_size {n} is too large for int32 indices")
    if u.dim() != 2 or u.shape[1] != 3:
        raise ValueError(f"u must be (P, 3), got {tuple(u.shape)}")
    u = u.detach()
    P = u.shape[0]
    exact_float = n**3 <= 2**24 or u.dtype == torch.float64
    offs = torch.tensor(corner_offsets(n), dtype=torch.int32, device=u.device)  # (8,)
    idx = torch.empty(P, 8, dtype=torch.int32, device=u.device)
    w = torch.empty(P, 8, dtype=u.dtype, device=u.device)
    chunk = _CHUNK if u.device.type == "cpu" else max(P, 1)
    for s in range(0, P, chunk):
        uc = u[s : s + chunk].T  # (3, c) planar view
        i0 = uc.floor().clamp_(0, n - 2)  # (3, c) cell's lower corner
        f = (uc - i0).clamp_(0.0, 1.0)  # (3, c) position inside the cell
        g = 1.0 - f
        if exact_float:
            base = ((i0[0] * n + i0[1]) * n + i0[2]).to(torch.int32)  # (c,)
        else:
            i0i = i0.to(torch.int32)
            base = (i0i[0] * n + i0i[1]) * n + i0i[2]
        torch.add(base[:, None], offs, out=idx[s : s + chunk])  # (c, 8)
        wc = w[s : s + chunk]  # (c, 8)
        for j, a in enumerate((g[0] * g[1], g[0] * f[1], f[0] * g[1], f[0] * f[1])):
            torch.mul(a, g[2], out=wc[:, 2 * j])
            torch.mul(a, f[2], out=wc[:, 2 * j + 1])
    return idx, w



_SPARSE_ROWS = 0.5  # scatter only the points with a non-zero gradient when fewer than this fraction have one


def _scatter_jobs(grad: Tensor, idx: Tensor, idx64: Tensor | None, w: Tensor, grad_out: Tensor) -> list[Any]:
    """Jobs doing ``grad[c, idx[p, k]] += w[p, k] * grad_out[p, c]`` for every channel ``c`` (grad (C, M)).

    Points whose gradient row is all zero add nothing and are skipped when they are the majority (features
    of samples below the weight threshold). ``idx64`` is ``idx`` as int64 (``scatter_add_`` wants int64 and is
    faster than ``index_add_`` with int32), converted once per backward and shared.
    """
    P = idx.shape[0]
    if grad_out.shape[1] > 0 and P > 0:
        rows = grad_out.ne(0).any(1)  # (P,)
        n_rows = int(rows.sum())
        if n_rows < _SPARSE_ROWS * P:
            sel = rows.nonzero().squeeze(1)  # (P2,)
            idx, w, grad_out = idx.index_select(0, sel), w.index_select(0, sel), grad_out.index_select(0, sel)
            idx64 = None
    flat = (idx64 if idx64 is not None else idx.long()).view(-1)  # (P * 8,)

    def job(c: int) -> Any:
        return lambda: grad[c].scatter_add_(0, flat, (w * grad_out[:, c, None]).view(-1))

    return [job(c) for c in range(grad.shape[0])]


class _Trilinear(torch.autograd.Function):
    """Trilinear interpolation of several flattened grids at once, as one weighted gather per point.

    ``out[p, :] = sum_k w[p, k] * table[idx[p, k], :]`` with ``table`` (M, sum C_i) the grids side by side,
    channels last, so a single ``F.embedding_bag`` (fused gather-multiply-sum, one index walk for every
    channel) serves the density and the features. Returns one (P, C_i) view per grid.

    Backward is analytic: ``grad_i[c, idx[p, k]] += w[p, k] * grad_out_i[p, c]``, one ``scatter_add_`` per
    channel into the flat (C_i, M) gradient, reusing the forward's saved ``idx``/``w``; channels are spread
    over two threads. Both are several times faster on CPU than ``F.grid_sample`` 3D, whose backward is
    serial scalar code. ``w`` gets no gradient (sample positions are fixed).
    """

    @staticmethod
    def forward(ctx: Any, idx: Tensor, w: Tensor, *grids: Tensor) -> tuple[Tensor, ...]:  # grids (C_i, M)
        ctx.save_for_backward(idx, w)
        ctx.shapes = [g.shape for g in grids]
        if len(grids) == 1 and grids[0].shape[0] == 1:
            table = grids[0].reshape(-1, 1)  # (M, 1), no copy
        else:
            table = torch.cat([g.T for g in grids], dim=1)  # (M, sum C_i)
        if table.device.type == "cpu":
            out = F.embedding_bag(idx, table, per_sample_weights=w, mode="sum")  # (P, sum C_i)
        else:  # one gather kernel is as good on GPUs, and embedding_bag wants int64 there
            out = torch.einsum("pkc,pk->pc", table[idx.long()], w)
        splits = [g.shape[0] for g in grids]
        return tuple(out.split(splits, dim=1))  # (P, C_i) each

    @staticmethod
    def backward(ctx: Any, *grad_outs: Tensor | None) -> tuple[Tensor | None, ...]:
        idx, w = ctx.saved_tensors
        grads: list[Tensor | None] = []
        jobs: list[Any] = []
        idx64 = None
        for i, (shape, go) in enumerate(zip(ctx.shapes, grad_outs)):
            if not ctx.needs_input_grad[2 + i] or go is None:
                grads.append(None)
                continue
            grad = go.new_zeros(shape)  # (C_i, M)
            if idx64 is None:
                idx64 = idx.long()  # (P, 8)
            jobs += _scatter_jobs(grad, idx, idx64, w, go)
            grads.append(grad)
        run_jobs(jobs)
        return (None, None, *grads)


class _NativeTrilinear(torch.autograd.Function):
    """:func:`trilinear_rays` with the C kernels: grids (C_i, M) in, one (C_i, R, k) tensor per grid out."""

    @staticmethod
    def forward(
        ctx: Any, start: Tensor, delta: Tensor, counts: Tensor, k: int, n: int, skip: SkipRule | None, *grids: Tensor
    ) -> tuple[Tensor, ...]:
        fn = kernel("tri_fwd", start.dtype)
        R = start.shape[0]
        outs = [start.new_empty(g.shape[0], R, k) for g in grids]  # (C_i, R, k) each
        planes = [g[c] for g in grids for c in range(g.shape[0])]  # (M,) each, contiguous
        out_planes = [o[c] for o in outs for c in range(o.shape[0])]  # (R, k) each
        src, dst = pointer_array(planes), pointer_array(out_planes)
        C = len(planes)
        cuts = split_rays(R, k)
        ptr = (start.data_ptr(), delta.data_ptr(), counts.data_ptr())
        if skip is None:
            rule: tuple = (None, 0, 1, 1.0, 0.0, 0.0, 0.0, None)
            live = None
        else:
            bits = skip.grid.bits.contiguous()
            live = torch.empty(R, k, dtype=torch.uint8)  # (R, k)
            rule = (bits.data_ptr(), skip.grid.coarse_size, skip.grid.cell, skip.scale, skip.shift, skip.step,
                    skip.grid.stop_transmittance, live.data_ptr())
        run_jobs([partial(fn, *ptr, a, b, k, n, src, C, dst, *rule) for a, b in zip(cuts, cuts[1:])])
        ctx.save_for_backward(start, delta, counts)
        ctx.k, ctx.n, ctx.shapes = k, n, [g.shape for g in grids]
        if live is None:
            return tuple(outs)
        live_b = live.bool()
        ctx.mark_non_differentiable(live_b)
        return (*outs, live_b)

    @staticmethod
    def backward(ctx: Any, *grad_outs: Tensor | None) -> tuple[Tensor | None, ...]:
        start, delta, counts = ctx.saved_tensors
        k, n = ctx.k, ctx.n
        grad_outs = grad_outs[: len(ctx.shapes)]  # not the live mask's
        need = [ctx.needs_input_grad[6 + i] and go is not None for i, go in enumerate(grad_outs)]
        grads = [go.new_zeros(shape) if nd else None for nd, go, shape in zip(need, grad_outs, ctx.shapes)]
        gos = [go.contiguous() for nd, go in zip(need, grad_outs) if nd]  # (C_i, R, k) each
        g_planes = [go[c] for go in gos for c in range(go.shape[0])]  # (R, k) each
        planes = [gr[c] for gr in grads if gr is not None for c in range(gr.shape[0])]  # (M,) each
        if not planes:
            return (None,) * 6 + tuple(grads)
        fn = kernel("tri_bwd", start.dtype)
        R, C = start.shape[0], len(planes)
        ptr = (start.data_ptr(), delta.data_ptr(), counts.data_ptr())
        gp, arr = pointer_array(g_planes), pointer_array(planes)
        if workers() == 1 or R * k < MIN_SPLIT:
            fn(*ptr, 0, R, k, n, gp, 0, C, arr)
        elif C % 2 == 0:  # two threads on disjoint channels
            h = C // 2
            run_jobs([partial(fn, *ptr, 0, R, k, n, gp, 0, h, arr), partial(fn, *ptr, 0, R, k, n, gp, h, C, arr)])
        else:  # the odd channel out is split by rays, one half scattered into a plane aside
            h, half = C // 2, R // 2
            aside = torch.zeros_like(planes[-1])
            arr2 = pointer_array(planes[:-1] + [aside])

            def first() -> None:
                fn(*ptr, 0, R, k, n, gp, 0, h, arr)
                fn(*ptr, 0, half, k, n, gp, C - 1, C, arr2)

            def second() -> None:
                fn(*ptr, 0, R, k, n, gp, h, C - 1, arr)
                fn(*ptr, half, R, k, n, gp, C - 1, C, arr)

            run_jobs([first, second])
            planes[-1] += aside
        return (None,) * 6 + tuple(grads)


def trilinear_rays_torch(
    start: Tensor, delta: Tensor, counts: Tensor, k: int, n: int, *grids: Tensor, skip: SkipRule | None = None
) -> tuple[Tensor, ...]:
    """The torch path of :func:`trilinear_rays` (same arguments and results, any device): the (R, k) samples
    through :func:`trilinear_corners` and :func:`trilinear_multi`; with ``skip`` only the live ones."""
    R = start.shape[0]
    steps = torch.arange(k, device=start.device, dtype=start.dtype)  # (k,)
    u = (start[:, None, :] + steps[None, :, None] * delta[:, None, :]).reshape(-1, 3)  # (R * k, 3)
    inside = (steps[None, :] < counts[:, None]).reshape(-1)  # (R * k,)
    if skip is None:
        idx, w = trilinear_corners(u, n)
        outs = trilinear_multi(idx, w * inside[:, None], *grids)  # (R * k, C_i) each, zero past a ray's end
        return tuple(o.T.reshape(o.shape[1], R, k) for o in outs)
    live = inside & (skip.grid.sample_mask(u, n) | u.isnan().any(1))  # (R * k,)
    if skip.grid.stop_transmittance > 0:  # density first (no grad): samples behind the transmittance floor
        sel = live.nonzero().squeeze(1)
        with torch.no_grad():
            idx, w = trilinear_corners(u[sel], n)
            (raw,) = trilinear_multi(idx, w, grids[0][:1])  # (P, 1)
            tau = u.new_zeros(R * k).index_copy(0, sel, F.softplus(raw[:, 0] * skip.scale + skip.shift) * skip.step)
            before = torch.cumsum(tau.view(R, k), dim=1) - tau.view(R, k)  # (R, k) thickness before each sample
            live &= (torch.exp(-before) >= skip.grid.stop_transmittance).view(-1)
    sel = live.nonzero().squeeze(1)  # (P,)
    idx, w = trilinear_corners(u[sel], n)
    outs = trilinear_multi(idx, w, *grids)  # (P, C_i) each
    dense = [o.new_zeros(R * k, o.shape[1]).index_copy(0, sel, o) for o in outs]  # (R * k, C_i) each
    return (*(o.T.reshape(o.shape[1], R, k) for o in dense), live.view(R, k))


def trilinear_rays(
    start: Tensor, delta: Tensor, counts: Tensor, k: int, n: int, *grids: Tensor, skip: SkipRule | None = None
) -> tuple[Tensor, ...]:
    """Trilinear interpolation of several flattened grids at evenly spaced samples along rays.

    Args:
        start: (R, 3) first sample of each ray, in voxel index coordinates (see :func:`trilinear_corners`).
        delta: (R, 3) step between samples, in index units.
        counts: (R,) int64 samples of each ray, ``<= k``.
        k: samples per ray of the dense output layout.
        n: grid size per side.
        grids: each (C_i, M) values, ``M = n^3``, flat index ``(i * n + j) * n + k``.
        skip: skip samples in empty cells and behind the transmittance floor (:mod:`sjc_engine.occupancy`);
            the first grid's first channel is then the raw density. None (default): every sample.

    Returns:
        one (C_i, R, k) tensor per grid: sample ``i`` of ray ``r`` at ``start[r] + i * delta[r]`` (clamped into
        ``[0, n - 1]``), zero for ``i >= counts[r]``; differentiable with respect to the grids (not the samples).
        With ``skip``, then a bool (R, k) live mask: True where a sample was looked up (skipped ones read zero).

    Uses the native kernels where they are built and everything is a float32/float64 CPU tensor, else the torch
    path; both give the same values and gradients.
    """
    if not grids:
        raise ValueError("trilinear_rays needs at least one grid")
    if start.dim() != 2 or start.shape[1] != 3 or delta.shape != start.shape or counts.shape != start.shape[:1]:
        raise ValueError(
            f"start and delta must be (R, 3) and counts (R,), got {tuple(start.shape)}, {tuple(delta.shape)}, "
            f"{tuple(counts.shape)}"
        )
    if n**3 >= 2**31:
        raise ValueError(f"grid_size {n} is too large")
    for g in grids:
        if g.dim() != 2 or g.shape[1] != n**3:
            raise ValueError(f"grids must be (C, {n}^3), got {tuple(g.shape)}")
    start, delta, counts = start.detach(), delta.detach().to(start.dtype), counts.detach().long()
    if native_supports(start, *grids):
        args = (start.contiguous(), delta.contiguous(), counts.contiguous(), int(k), int(n))
        return _NativeTrilinear.apply(*args, skip, *[g.contiguous() for g in grids])
    return trilinear_rays_torch(start, delta, counts, int(k), int(n), *grids, skip=skip)


def trilinear_points(u: Tensor, n: int, *grids: Tensor) -> tuple[Tensor, ...]:
    """Trilinear interpolation of several flattened grids at points ``u`` (P, 3) in voxel index coordinates
    (clamped into ``[0, n - 1]``): one (P, C_i) tensor per grid (:func:`trilinear_rays` with one sample per ray).
    """
    if u.dim() != 2 or u.shape[1] != 3:
        raise ValueError(f"u must be (P, 3), got {tuple(u.shape)}")
    ones = torch.ones(u.shape[0], dtype=torch.long, device=u.device)
    return tuple(o[:, :, 0].T for o in trilinear_rays(u, torch.zeros_like(u), ones, 1, n, *grids))


def trilinear_multi(idx: Tensor, w: Tensor, *grids: Tensor) -> tuple[Tensor, ...]:
    """Trilinear interpolation of several flattened grids at the same points, in one gather.

    Args:
        idx: (P, 8) int32 corner indices from :func:`trilinear_corners`.
        w: (P, 8) corner weights.
        grids: each (C_i, M) values, ``M = n^3``, flat index ``(i * n + j) * n + k``.

    Returns:
        one (P, C_i) tensor per grid; differentiable with respect to the grids.
    """
    if not grids:
        raise ValueError("trilinear_multi needs at least one grid")
    return _Trilinear.apply(idx, w, *grids)
