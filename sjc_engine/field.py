"""The voxel radiance field SJC optimises: a density grid and a feature grid over a box, plus a background.

Follows pals-ttic/sjc ``voxnerf/vox.py`` (``V_SD``): density ``(1, N, N, N)`` initialised to zeros, features
``(C, N, N, N)`` initialised from a standard normal, density activated *after* interpolation as
``softplus(raw * exp(d_scale) + shift)`` with a learnable scalar ``d_scale`` and ``shift = -1``, and a small
learnable background texture looked up by ray direction. Features are not squashed: the field renders straight
into the denoiser's space (SD latents or [-1, 1] pixels).

Grid convention: ``grid[..., i, j, k]`` holds the value at world point ``(x_i, y_j, z_k)`` with
``x_i = -bbox + 2 * bbox * i / (N - 1)`` (nodes on the box corners, like ``grid_sample(align_corners=True)``),
so ``density_grid()`` and ``occupancy()`` index as ``[x, y, z]``. Lookups are trilinear; the gather/scatter
kernels below replace ``F.grid_sample`` (3D), whose CPU backward is slow.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FORMAT_VERSION = 1


def corner_offsets(n: int) -> list[int]:
    """Flat offsets of a cell's 8 corners in an ``n^3`` grid, order ``(a, b, c)`` over x, y, z in {0, 1}."""
    return [a * n * n + b * n + c for a in (0, 1) for b in (0, 1) for c in (0, 1)]


def trilinear_corners(u: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The 8 cell corners and trilinear weights of points given in voxel index coordinates.

    Args:
        u: (P, 3) coordinates in index units, ``u = (x + bbox) / (2 * bbox) * (n - 1)``, inside ``[0, n - 1]``.
        n: grid size per side.

    Returns:
        ``idx`` (P, 8) int32 flat indices ``(i * n + j) * n + k`` into an ``n^3`` grid, and ``w`` (P, 8) weights
        (rows sum to 1), corners in the order of :func:`corner_offsets`.
    """
    if n**3 >= 2**31:
        raise ValueError(f"grid_size {n} is too large for int32 indices")
    u = u.detach()
    i0 = u.floor().clamp_(0, n - 2)  # (P, 3)
    fx, fy, fz = (u - i0).clamp_(0.0, 1.0).T.contiguous()  # (P,) each
    i0 = i0.to(torch.int32)
    base = (i0[:, 0] * n + i0[:, 1]) * n + i0[:, 2]  # (P,)
    idx = base[:, None] + torch.tensor(corner_offsets(n), dtype=torch.int32, device=u.device)  # (P, 8)
    gx, gy, gz = 1 - fx, 1 - fy, 1 - fz
    xy = (gx * gy, gx * fy, fx * gy, fx * fy)
    w = torch.stack([a * z for a in xy for z in (gz, fz)], dim=1)  # (P, 8)
    return idx, w


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sjc-scatter")
    return _POOL


def _scatter_add(grad: Tensor, idx: Tensor, w: Tensor, grad_out: Tensor) -> None:
    """``grad[c, idx[p, k]] += w[p, k] * grad_out[c, p]`` for every channel, in place (grad (C, M)).

    ``index_add_`` is serial on CPU; with more than one intra-op thread the channels (or, for one channel,
    the two halves of the points) are scattered by two Python threads, which release the GIL inside torch.
    """
    flat = idx.reshape(-1)  # (P * 8,)

    def one(c: int, dst: Tensor, sl: slice = slice(None)) -> None:
        dst.index_add_(0, flat[sl], (w * grad_out[c][:, None]).reshape(-1)[sl])

    C = grad.shape[0]
    parallel = grad.device.type == "cpu" and torch.get_num_threads() > 1 and idx.shape[0] >= 4096
    if not parallel:
        for c in range(C):
            one(c, grad[c])
    elif C > 1:
        list(_pool().map(lambda c: one(c, grad[c]), range(C)))
    else:
        half = (idx.shape[0] // 2) * 8
        other = torch.zeros_like(grad[0])
        jobs = [_pool().submit(one, 0, grad[0], slice(0, half)), _pool().submit(one, 0, other, slice(half, None))]
        for j in jobs:
            j.result()
        grad[0] += other


class _Trilinear(torch.autograd.Function):
    """``out[c, p] = sum_k w[p, k] * grid[c, idx[p, k]]``: trilinear interpolation as a weighted gather.

    Forward: ``F.embedding_bag`` (one fused gather-multiply-sum per point) on a channel-last copy of the grid.
    Backward: 1D ``index_add_`` per channel. Both are several times faster on CPU than ``F.grid_sample`` 3D,
    whose backward is serial scalar code. ``w`` gets no gradient (sample positions are fixed).
    """

    @staticmethod
    def forward(ctx: Any, grid: Tensor, idx: Tensor, w: Tensor) -> Tensor:  # grid (C, M), idx/w (P, 8)
        ctx.save_for_backward(idx, w)
        ctx.grid_size = grid.shape[1]
        table = grid.T.contiguous() if grid.shape[0] > 1 else grid.reshape(-1, 1)  # (M, C)
        if grid.device.type == "cpu":
            out = F.embedding_bag(idx, table, per_sample_weights=w, mode="sum")  # (P, C)
        else:  # one gather kernel is as good on GPUs, and embedding_bag wants int64 there
            out = torch.einsum("pkc,pk->pc", table[idx.long()], w)
        return out.T  # (C, P)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None]:  # grad_out (C, P)
        idx, w = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            C = grad_out.shape[0]
            grad = grad_out.new_zeros(C, ctx.grid_size)
            _scatter_add(grad, idx, w, grad_out.contiguous())
        return grad, None, None


def trilinear(grid: Tensor, idx: Tensor, w: Tensor) -> Tensor:
    """Trilinear interpolation of a flattened grid at points given by :func:`trilinear_corners`.

    Args:
        grid: (C, M) values, ``M = n^3``, flat index ``(i * n + j) * n + k``.
        idx: (P, 8) int32 corner indices.
        w: (P, 8) corner weights.

    Returns:
        (C, P) interpolated values; differentiable with respect to ``grid``.
    """
    return _Trilinear.apply(grid, idx, w)


class VoxelField(nn.Module):
    """Density and feature grids over ``[-bbox, bbox]^3`` with a direction-indexed background.

    Args:
        grid_size: voxels per side ``N`` (reference: 100).
        channels: feature channels ``C`` (4 for SD latents, 3 for pixel models).
        bbox: half-size of the box (reference: 1.0).
        density_shift: added before the softplus (reference: -1.0, so an empty init has density ~0.31).
        bg_res: side of the background texture (the reference's SJC runs use 4 x 4).
    """

    def __init__(
        self, grid_size: int, channels: int, bbox: float = 1.0, density_shift: float = -1.0, bg_res: int = 4
    ) -> None:
        super().__init__()
        if grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {grid_size}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if bbox <= 0:
            raise ValueError(f"bbox must be > 0, got {bbox}")
        if bg_res < 1:
            raise ValueError(f"bg_res must be >= 1, got {bg_res}")
        self.grid_size = int(grid_size)
        self.channels = int(channels)
        self.bbox = float(bbox)
        self.density_shift = float(density_shift)
        self.bg_res = int(bg_res)
        n = self.grid_size
        self.density = nn.Parameter(torch.zeros(1, n, n, n))
        self.features = nn.Parameter(torch.randn(channels, n, n, n))
        self.d_scale = nn.Parameter(torch.tensor(0.0))
        self.bg = nn.Parameter(torch.randn(channels, bg_res, bg_res))  # (C, polar, azimuth)

    # ---------------------------------------------------------------- geometry
    @property
    def voxel_size(self) -> float:
        """World length of one voxel, ``2 * bbox / N`` (the reference's unit for the march step)."""
        return 2.0 * self.bbox / self.grid_size

    def to_voxel_coords(self, x: Tensor) -> Tensor:
        """World points (..., 3) to index coordinates in ``[0, N - 1]`` (no clamping)."""
        return (x + self.bbox) * ((self.grid_size - 1) / (2.0 * self.bbox))

    def grid_points(self) -> Tensor:
        """World coordinates of the grid nodes, (N, N, N, 3) indexed ``[i, j, k]``."""
        ax = torch.linspace(-self.bbox, self.bbox, self.grid_size, device=self.density.device)
        return torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)

    # ---------------------------------------------------------------- values
    def activate(self, raw: Tensor) -> Tensor:
        """Raw (interpolated) density to density: ``softplus(raw * exp(d_scale) + shift)``."""
        return F.softplus(raw * torch.exp(self.d_scale) + self.density_shift)

    def raw_density_at(self, idx: Tensor, w: Tensor) -> Tensor:
        """Interpolated raw density (P,) at points given by :func:`trilinear_corners`."""
        return trilinear(self.density.view(1, -1), idx, w)[0]

    def features_at(self, idx: Tensor, w: Tensor) -> Tensor:
        """Interpolated features (P, C) at points given by :func:`trilinear_corners`."""
        return trilinear(self.features.view(self.channels, -1), idx, w).T

    def query(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density (P,) and features (P, C) at world points ``x`` (P, 3), clamped into the box."""
        u = self.to_voxel_coords(x).clamp(0, self.grid_size - 1)
        idx, w = trilinear_corners(u, self.grid_size)
        return self.activate(self.raw_density_at(idx, w)), self.features_at(idx, w)

    def background(self, dirs: Tensor) -> Tensor:
        """Background features (R, C) for unit ray directions ``dirs`` (R, 3).

        The texture is indexed by (polar angle from +y, azimuth around y): bilinear, wrapping around in
        azimuth and clamped at the poles.
        """
        x, y, z = dirs.unbind(-1)
        polar = torch.acos(y.clamp(-1.0, 1.0)) / math.pi  # (R,) in [0, 1]
        azim = (torch.atan2(x, z) / (2 * math.pi)) % 1.0  # (R,) in [0, 1)
        res = self.bg_res
        tex = torch.cat([self.bg[:, :, -1:], self.bg, self.bg[:, :, :1]], dim=2)  # (C, res, res + 2) wrap
        col = azim * res + 0.5  # texel centres of the padded texture at 1, ..., res
        row = (polar * res - 0.5).clamp(0, res - 1)
        gx = col / (res + 1) * 2 - 1
        gy = row / max(res - 1, 1) * 2 - 1 if res > 1 else torch.zeros_like(row)
        grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)  # (1, 1, R, 2)
        out = F.grid_sample(tex[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.view(self.channels, -1).T  # (R, C)

    def density_grid(self) -> Tensor:
        """Activated density at the grid nodes, (N, N, N) indexed ``[x, y, z]``."""
        return self.activate(self.density[0])

    @torch.no_grad()
    def occupancy(self, threshold: float) -> Tensor:
        """Bool (N, N, N): nodes whose activated density exceeds ``threshold``."""
        return self.density_grid() > threshold

    # ---------------------------------------------------------------- optimisation
    def param_groups(self, lr: float, bg_lr: float) -> list[dict[str, Any]]:
        """Parameter groups for ``torch.optim.Adamax``: the grids and ``d_scale`` at ``lr``, the background
        at ``bg_lr`` (reference: 0.05 and 1e-4)."""
        return [
            {"params": [self.density, self.features, self.d_scale], "lr": lr},
            {"params": [self.bg], "lr": bg_lr},
        ]

    # ---------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {
            "grid_size": self.grid_size,
            "channels": self.channels,
            "bbox": self.bbox,
            "density_shift": self.density_shift,
            "bg_res": self.bg_res,
        }

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``{"format", "config", "state_dict", "extra"}`` to ``path`` with ``torch.save``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"format": FORMAT_VERSION, "config": self.config(), "state_dict": state, "extra": extra or {}}, path)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "VoxelField":
        """Rebuild a field written by :meth:`save`; its ``extra`` dict is kept as ``field.extra``."""
        blob = torch.load(Path(path), map_location=map_location, weights_only=True)
        if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
            raise ValueError(f"{path} is not a VoxelField file (no 'config'/'state_dict')")
        field = cls(**blob["config"])
        field.load_state_dict(blob["state_dict"])
        field.extra = dict(blob.get("extra") or {})
        return field.to(map_location)
