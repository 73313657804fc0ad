"""Regularisers of the voxel field: emptiness (sparsity of compositing weights) and center depth.

- Emptiness: ``mean_i log(1 + beta w_i)`` over every sample's compositing weight, weighted by ``lambda_1``
  and by ``lambda_1 * multiplier`` once ``emptiness_step`` of the run is done (pals-ttic/sjc ``run_sjc.py``).
- Smoothness (off by default; not in the reference): ``sum_axes mean((d[i+1] - d[i])^2)`` over the raw density
  grid, a discrete Dirichlet energy: it pulls each voxel towards its neighbours, so the score's per-voxel noise
  does not freeze into a pebbly surface, and thin sheets (two faces each) cost more than solid bodies. With a
  ``weight`` grid each difference counts as the smaller of its two nodes' weights: the loop uses it on the raw
  features (the colours) weighted by occupancy, so the object's colours are evened out and empty space's
  (what a torus's hole shows) left alone.
- Center depth (off by default): ``-log(mean depth outside a centre box - mean depth inside it)``. The paper
  writes ``inside - outside`` (pals-ttic/sjc issue 21: the sign is wrong; the code only worked because
  ``log``'s backward ignores the argument's sign). With empty pixels rendered far away, ``outside - inside``
  is positive when the object sits in the centre, and minimising the loss pulls it there. The log's argument
  is clamped to ``eps`` so it is never non-positive.

On the CPU the smoothness loss is one C pass that writes its gradient with its value (``native/smoothness.c``)
where the kernels take the tensor, else torch ops; the two agree to float rounding (``tests/engine/test_losses.py``).
The loop's emptiness loss comes from the renderer (``RenderOutput.emptiness``: the fused kernels sum each ray's
weighted samples, the zeros of the dense layout add nothing); :func:`emptiness_loss` computes the same from the
weights. As torch ops over a 64^3 field at 4 views the two were a fifth of a step.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor

from sjc_engine.native import kernel, native_supports
from sjc_engine.parallel import run_jobs, workers


class _Smoothness(torch.autograd.Function):
    """``smooth_fwd`` (``wsmooth_fwd`` with a weight grid): the smoothness of a (..., N, N, N) grid, its gradient
    made with it (kept for the backward). The weights (N, N, N) take no gradient."""

    @staticmethod
    def forward(ctx: Any, grid: Tensor, weight: Tensor | None = None) -> Tensor:
        g = grid.detach().contiguous()
        n = g.shape[-1]
        B = g.numel() // n**3  # grids
        grad = torch.empty_like(g)
        w = None if weight is None else weight.detach().to(g.dtype).contiguous()
        fn = kernel("smooth_fwd" if w is None else "wsmooth_fwd", g.dtype)
        cuts = [0, n // 2, n] if workers() > 1 else [0, n]  # slabs of the first axis, half each on two threads
        parts: list[float] = [0.0] * (len(cuts) - 1)

        def job(k: int) -> None:
            if w is None:
                parts[k] = fn(g.data_ptr(), B, n, cuts[k], cuts[k + 1], grad.data_ptr())
            else:
                parts[k] = fn(g.data_ptr(), w.data_ptr(), B, n, cuts[k], cuts[k + 1], grad.data_ptr())

        run_jobs([partial(job, k) for k in range(len(parts))])
        ctx.save_for_backward(grad)
        return g.new_tensor(sum(parts))

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:
        (grad,) = ctx.saved_tensors
        return grad * g, None


def emptiness_loss(weights: Tensor, scale: float = 10.0) -> Tensor:
    """``mean(log(1 + scale * w))`` over the compositing weights ``w`` (any shape)."""
    if weights.numel() == 0:
        return weights.new_zeros(())
    return torch.log1p(scale * weights).mean()


def emptiness_weight(step: int, total_steps: int, weight: float = 1e4, multiplier: float = 20.0, switch: float = 0.5) -> float:
    """The emptiness weight at 0-based ``step``: ``weight``, times ``multiplier`` from ``switch * total_steps`` on."""
    return weight * multiplier if step >= switch * total_steps else weight


def smoothness_loss(grid: Tensor, weight: Tensor | None = None) -> Tensor:
    """``sum over the last three axes of mean((g[i+1] - g[i])^2)`` of a (..., N, N, N) grid; with ``weight``
    (N, N, N), each difference times ``min(weight[i], weight[i+1])`` (no gradient flows into ``weight``)."""
    if grid.dim() < 3:
        raise ValueError(f"grid must be (..., N, N, N), got {tuple(grid.shape)}")
    if weight is not None and weight.shape != grid.shape[-3:]:
        raise ValueError(f"weight must be the grid's last three axes {tuple(grid.shape[-3:])}, got {tuple(weight.shape)}")
    cubic = grid.shape[-1] == grid.shape[-2] == grid.shape[-3] >= 2
    if cubic and grid.numel() > 0 and native_supports(grid) and (weight is None or weight.device == grid.device):
        return _Smoothness.apply(grid, weight)
    if weight is None:
        return sum(grid.diff(dim=axis).square().mean() for axis in (-3, -2, -1))
    w = weight.detach().to(grid.dtype)
    return sum((grid.diff(dim=axis).square() * torch.minimum(w.narrow(axis, 0, w.shape[axis] - 1),
                                                               w.narrow(axis, 1, w.shape[axis] - 1))).mean()
               for axis in (-3, -2, -1))


def center_box_mask(height: int, width: int, margin: float = 7 / 64, device: torch.device | str = "cpu") -> Tensor:
    """(H, W) bool, True inside the centre box that leaves ``margin`` of each side (reference: 7 of 64 pixels)."""
    mh, mw = round(height * margin), round(width * margin)
    if 2 * mh >= height or 2 * mw >= width:
        raise ValueError(f"margin {margin} leaves no centre box in a {height}x{width} image")
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[mh : height - mh, mw : width - mw] = True
    return mask


def center_depth_loss(depth: Tensor, margin: float = 7 / 64, eps: float = 1e-6) -> Tensor:
    """``-log(max(mean depth outside the centre box - mean depth inside, eps))`` of a (H, W) depth map."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {tuple(depth.shape)}")
    inside = center_box_mask(*depth.shape, margin=margin, device=depth.device)
    diff = depth[~inside].mean() - depth[inside].mean()
    return -torch.log(diff.clamp_min(eps))
