"""Empty-space skipping: a coarse occupancy bitfield derived from the density, and early ray termination.

The renderer marches every ray at a fixed step (the reference's algorithm). Once a run has shaped an object,
most samples sit in empty space or behind an opaque surface, where they carry no weight: an
:class:`OccupancyGrid` lets the renderer (the fused kernel of :mod:`sjc_engine.march`, and the lookups of
:func:`sjc_engine.trilinear.trilinear_rays`, C kernels and torch path) skip them.

* A coarse cell covers ``cell`` x ``cell`` x ``cell`` fine voxels. It is *occupied* when some grid node of its
  voxels has an activated density ``sigma`` with ``sigma * step >= tau_threshold`` (one sample's optical
  thickness), then the occupied set is dilated by ``dilation`` coarse cells (the safety margin: the density may
  grow between two refreshes, and only looked-up samples give the density a gradient).
* A sample in an empty coarse cell is skipped: no lookup, ``tau = 0``, no gradient. Its weight in the dense path
  is at most ``tau_threshold`` (below the compositing threshold 1e-4 for the default), so its features never
  counted, and the transmittance of the samples behind it changes by at most ``tau_threshold`` per skipped
  sample.
* A ray stops once its transmittance falls below ``stop_transmittance``: every later sample's weight is below
  that too, so with the default (the compositing threshold) its features would not have counted either.

Values and gradients therefore equal the dense path's wherever a sample carries weight (``w >= 1e-4``), up to
the tiny terms above (tested in ``tests/engine/test_occupancy.py``). The grid is refreshed every ``every``
optimiser steps by :func:`sjc_engine.optimize.run_sjc` and saved with its resumable state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sjc_engine.native import kernel, native_supports

__all__ = ["DEFAULT_SETTINGS", "OccupancyGrid", "OccupancySettings", "SkipRule", "cell_max", "coarse_cells"]


@dataclass(frozen=True)
class OccupancySettings:
    """How the optimiser loop builds and refreshes the occupancy grid.

    Attributes:
        cell: fine voxels per coarse cell side (4: a 64^3 grid gets a 16^3 bitfield).
        tau_threshold: a cell is occupied where some node's ``sigma * step`` reaches this (default 1e-5, a
            tenth of the compositing threshold).
        dilation: coarse cells added around the occupied ones (the safety margin), default 1.
        every: optimiser steps between refreshes (default 8); 0 turns skipping off in the loop.
        stop_transmittance: rays stop once their transmittance is below this (default 1e-4, the compositing
            threshold); 0 never stops them.
    """

    cell: int = 4
    tau_threshold: float = 1e-5
    dilation: int = 1
    every: int = 8
    stop_transmittance: float = 1e-4


DEFAULT_SETTINGS = OccupancySettings()


@dataclass
class OccupancyGrid:
    """An occupancy bitfield over coarse cells of an ``n^3`` voxel grid, plus the ray-stopping rule.

    Attributes:
        bits: (G, G, G) uint8, 1 for an occupied coarse cell; ``G = ceil((n - 1) / cell)``; coarse cell
            ``(a, b, c)`` holds the fine cells (voxels between nodes) ``(i, j, k)`` with ``i // cell == a`` etc.
        cell: fine voxels per coarse cell side.
        stop_transmittance: rays stop once their transmittance is below this (0: never).
    """

    bits: Tensor
    cell: int
    stop_transmittance: float = DEFAULT_SETTINGS.stop_transmittance

    def __post_init__(self) -> None:
        if self.cell < 1:
            raise ValueError(f"cell must be >= 1, got {self.cell}")
        if self.bits.dim() != 3 or self.bits.dtype != torch.uint8:
            raise ValueError(f"bits must be a (G, G, G) uint8 tensor, got {tuple(self.bits.shape)} {self.bits.dtype}")
        if not 0.0 <= self.stop_transmittance < 1.0:
            raise ValueError(f"stop_transmittance must be in [0, 1), got {self.stop_transmittance}")

    @property
    def coarse_size(self) -> int:
        """``G``, coarse cells per side."""
        return int(self.bits.shape[0])

    @property
    def fraction(self) -> float:
        """Share of the coarse cells that are occupied."""
        return float(self.bits.float().mean())

    @classmethod
    def full(cls, grid_size: int, cell: int = DEFAULT_SETTINGS.cell, device: torch.device | str = "cpu") -> "OccupancyGrid":
        """Every cell occupied and rays never stopped: lookups then equal the dense path exactly."""
        g = coarse_cells(grid_size, cell)
        return cls(torch.ones(g, g, g, dtype=torch.uint8, device=device), cell, 0.0)

    @classmethod
    @torch.no_grad()
    def from_density(
        cls, sigma: Tensor, step: float, settings: OccupancySettings = DEFAULT_SETTINGS
    ) -> "OccupancyGrid":
        """Build the grid from activated densities at the nodes.

        Args:
            sigma: (n, n, n) activated density at the grid nodes (:meth:`VoxelField.density_grid`).
            step: the march step (world units) the renderer uses: a sample's thickness is ``sigma * step``.
            settings: cell size, threshold, dilation and the ray-stopping rule.
        """
        if sigma.dim() != 3 or len(set(sigma.shape)) != 1:
            raise ValueError(f"sigma must be (n, n, n), got {tuple(sigma.shape)}")
        return cls.from_cell_max(cell_max(sigma, settings.cell), step, settings)

    @classmethod
    @torch.no_grad()
    def from_cell_max(
        cls, sigma_max: Tensor, step: float, settings: OccupancySettings = DEFAULT_SETTINGS
    ) -> "OccupancyGrid":
        """Build the grid from each coarse cell's largest activated density (``cell_max`` of the node densities,
        (g, g, g)); see :meth:`from_density`."""
        occ = (sigma_max.float() * step >= settings.tau_threshold).float()[None, None]  # (1, 1, g, g, g)
        if settings.dilation > 0:
            d = settings.dilation
            occ = F.max_pool3d(occ, kernel_size=2 * d + 1, stride=1, padding=d)
        return cls(occ[0, 0].to(torch.uint8).contiguous(), settings.cell, settings.stop_transmittance)

    def sample_mask(self, u: Tensor, n: int) -> Tensor:
        """Bool (P,): whether points ``u`` (P, 3) in voxel index coordinates lie in occupied cells (the fine
        cell of a point as in :func:`sjc_engine.trilinear.trilinear_corners`: clamped into ``[0, n - 2]``)."""
        i0 = u.detach().nan_to_num().floor().clamp_(0, n - 2).long() // self.cell  # (P, 3)
        g = self.coarse_size
        return self.bits.view(-1)[(i0[:, 0] * g + i0[:, 1]) * g + i0[:, 2]].bool()


    @torch.no_grad()
    def sample_range(self, start: Tensor, delta: Tensor, counts: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Per ray, the samples that can meet an occupied cell: ``(first, count)`` (R,) int64 each, so samples
        ``i < first`` and ``i >= first + count`` (of ``start + i * delta``, ``i < counts``, voxel index
        coordinates) lie outside the occupied cells' bounding box (a margin of one sample each side); a lookup
        skips them anyway, so rays can start at ``first`` with ``count`` samples and nothing changes.

        One C pass (``march_range``, the same float64 arithmetic, so the same integers) where the kernels take
        the tensors, else :meth:`sample_range_torch`."""
        bits = self.bits
        if bits.device.type == "cpu" and native_supports(start, delta):
            R = start.shape[0]
            first, kept = torch.empty(R, dtype=torch.long), torch.empty(R, dtype=torch.long)  # (R,) each
            s, d = start.detach().contiguous(), delta.detach().contiguous()  # (R, 3) each
            c, b = counts.long().contiguous(), bits.contiguous()
            kernel("march_range", start.dtype)(s.data_ptr(), d.data_ptr(), c.data_ptr(), R, b.data_ptr(),
                                               self.coarse_size, self.cell, n, first.data_ptr(), kept.data_ptr())
            return first, kept
        return self.sample_range_torch(start, delta, counts, n)

    @torch.no_grad()
    def sample_range_torch(self, start: Tensor, delta: Tensor, counts: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """The torch ops of :meth:`sample_range` (any device)."""
        R, dev = start.shape[0], start.device
        occupied = self.bits.to(dev).nonzero()  # (M, 3) coarse cells
        if occupied.numel() == 0:
            zero = torch.zeros(R, dtype=torch.long, device=dev)
            return zero, zero
        lo_c = occupied.amin(0) * self.cell  # (3,) first occupied fine cell
        hi_c = ((occupied.amax(0) + 1) * self.cell).clamp(max=n - 1)  # (3,) past the last one
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=dev)
        lo = torch.where(lo_c > 0, lo_c.double(), -inf)  # points clamp into cell 0 and n - 2 from outside
        hi = torch.where(hi_c < n - 1, hi_c.double(), inf)
        s, d = start.detach().double(), delta.detach().double()  # (R, 3)
        inside = (s >= lo) & (s < hi)  # (R, 3) for axes the ray runs parallel to
        safe = torch.where(d == 0, torch.ones_like(d), d)
        a, b = (lo - s) / safe, (hi - s) / safe
        enter = torch.where(d == 0, torch.where(inside, -inf, inf), torch.minimum(a, b)).amax(1)  # (R,)
        leave = torch.where(d == 0, torch.where(inside, inf, -inf), torch.maximum(a, b)).amin(1)  # (R,)
        top = counts.double()  # NaN bounds (NaN rays) keep every sample
        first = torch.where(enter.isnan(), 0.0, enter.floor() - 1).clamp(min=0).minimum(top)
        end = torch.where(leave.isnan(), top, leave.floor() + 2).clamp(min=0).minimum(top)
        return first.long(), (end - first).clamp(min=0).long()

@torch.no_grad()
def cell_max(values: Tensor, cell: int) -> Tensor:
    """The largest of the node values (n, n, n) of each coarse cell's voxels, (g, g, g): cell ``a`` spans nodes
    ``a * cell`` to ``a * cell + cell`` (the last cell cut at node ``n - 1``) on each axis. Three passes of one
    axis each (windows of ``cell + 1`` nodes, ``cell`` apart); exact (a max), and about ten times faster here than
    pooling the voxels first (``max_pool3d`` with stride 1)."""
    n = values.shape[0]
    pad = coarse_cells(n, cell) * cell + 1 - n
    x = F.pad(values[None], (0, pad, 0, pad, 0, pad), value=float("-inf"))[0]  # (g c + 1,) * 3
    for dim in range(3):
        x = x.unfold(dim, cell + 1, cell).amax(-1)  # one axis down to g windows
    return x


def coarse_cells(grid_size: int, cell: int) -> int:
    """Coarse cells per side for an ``n^3`` node grid (``n - 1`` voxels per side)."""
    return -(-(grid_size - 1) // cell)


@dataclass(frozen=True)
class SkipRule:
    """What a ray lookup needs to skip samples: the grid and the density's activation (for the stopping rule).

    Attributes:
        grid: the occupancy grid.
        scale: ``exp(d_scale)`` of the field, so ``sigma = softplus(raw * scale + shift)``.
        shift: the field's density shift.
        step: the march step in world units (``tau = sigma * step``).
    """

    grid: OccupancyGrid
    scale: float
    shift: float
    step: float
