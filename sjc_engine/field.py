"""The voxel radiance field SJC optimises: a density grid and a feature grid over a box, plus a background.

Follows pals-ttic/sjc ``voxnerf/vox.py`` (``V_SD``): density ``(1, N, N, N)`` initialised to zeros, features
``(C, N, N, N)`` initialised from a standard normal, density activated *after* interpolation as
``softplus(raw * exp(d_scale) + shift)`` with a learnable scalar ``d_scale`` and ``shift = -1``, and a small
learnable background texture looked up by ray direction. The field renders straight into the denoiser's
space: with ``feature_activation="identity"`` (the reference, for SD latents) features are used as they are;
with ``"tanh"`` (pixel models) features and background are squashed into [-1, 1].

Grid convention: ``grid[..., i, j, k]`` holds the value at world point ``(x_i, y_j, z_k)`` with
``x_i = -bbox + 2 * bbox * i / (N - 1)`` (nodes on the box corners, like ``grid_sample(align_corners=True)``),
so ``density_grid()`` and ``occupancy()`` index as ``[x, y, z]``. Lookups are trilinear
(:mod:`sjc_engine.trilinear`: C kernels where they are built, else torch ops).

``occupancy_grid`` (None by default: every sample is looked up) lets ray lookups skip empty space
(:mod:`sjc_engine.occupancy`); :meth:`VoxelField.refresh_occupancy` rebuilds it from the density. It is derived
state, not a parameter: not in ``state_dict`` nor in saved files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sjc_engine.background import background_lookup
from sjc_engine.occupancy import DEFAULT_SETTINGS, OccupancyGrid, OccupancySettings, SkipRule, cell_max
from sjc_engine.trilinear import trilinear_rays

FORMAT_VERSION = 1
NEUTRAL_BACKGROUND = 0.7  # rendered grey of a field whose background is not learned (0.85 in [0, 1] colour)


class VoxelField(nn.Module):
    """Density and feature grids over ``[-bbox, bbox]^3`` with a direction-indexed background.

    Args:
        grid_size: voxels per side ``N`` (reference: 100).
        channels: feature channels ``C`` (4 for SD latents, 3 for pixel models).
        bbox: half-size of the box (reference: 1.0).
        density_shift: added before the softplus (reference: -1.0, so an empty init has density ~0.31).
        bg_res: side of the background texture (the reference's SJC runs use 4 x 4).
        feature_activation: ``"identity"`` (reference: raw features, as SD latents are unbounded) or
            ``"tanh"`` (features and background squashed into [-1, 1], the range of pixel models, so a
            faint region cannot look solid by over-saturating its colour).
    """

    def __init__(
        self,
        grid_size: int,
        channels: int,
        bbox: float = 1.0,
        density_shift: float = -1.0,
        bg_res: int = 4,
        feature_activation: Literal["identity", "tanh"] = "identity",
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
        if feature_activation not in ("identity", "tanh"):
            raise ValueError(f"feature_activation must be 'identity' or 'tanh', got {feature_activation!r}")
        self.grid_size = int(grid_size)
        self.channels = int(channels)
        self.bbox = float(bbox)
        self.density_shift = float(density_shift)
        self.bg_res = int(bg_res)
        self.feature_activation = feature_activation
        n = self.grid_size
        self.density = nn.Parameter(torch.zeros(1, n, n, n))
        self.features = nn.Parameter(torch.randn(channels, n, n, n))
        self.d_scale = nn.Parameter(torch.tensor(0.0))
        self.bg = nn.Parameter(torch.randn(channels, bg_res, bg_res))  # (C, polar, azimuth)
        self.occupancy_grid: OccupancyGrid | None = None

    # ---------------------------------------------------------------- geometry
    @property
    def voxel_size(self) -> float:
        """World length of one voxel, ``2 * bbox / N`` (the reference's unit for the march step)."""
        return 2.0 * self.bbox / self.grid_size

    def grid_points(self) -> Tensor:
        """World coordinates of the grid nodes, (N, N, N, 3) indexed ``[i, j, k]``."""
        ax = torch.linspace(-self.bbox, self.bbox, self.grid_size, device=self.density.device)
        return torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)

    # ---------------------------------------------------------------- values
    def activate(self, raw: Tensor) -> Tensor:
        """Raw (interpolated) density to density: ``softplus(raw * exp(d_scale) + shift)``."""
        return F.softplus(raw * torch.exp(self.d_scale) + self.density_shift)

    def lookup_rays(self, start: Tensor, delta: Tensor, counts: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Raw density (R, k) and features (C, R, k) at ``k`` evenly spaced samples per ray, zero past each
        ray's ``counts`` (see :func:`~sjc_engine.trilinear.trilinear_rays`; ``start`` (R, 3) and ``delta``
        (R, 3) in voxel index coordinates, ``counts`` (R,)). Every sample: no skipping."""
        grids = (self.density.view(1, -1), self.features.view(self.channels, -1))
        raw, feats = trilinear_rays(start, delta, counts, k, self.grid_size, *grids)
        return raw[0], self.activate_features(feats)

    def lookup_rays_skipping(
        self, start: Tensor, delta: Tensor, counts: Tensor, k: int, step: float
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`lookup_rays` skipping empty space by :attr:`occupancy_grid` (``step``: the march step in world
        units, for the stopping rule), plus the (R, k) bool mask of the samples looked up; without a grid the
        plain lookup and None for the mask."""
        if self.occupancy_grid is None:
            return (*self.lookup_rays(start, delta, counts, k), None)
        grids = (self.density.view(1, -1), self.features.view(self.channels, -1))
        grid = self.occupancy_grid
        if grid.bits.device != self.density.device:  # the field was moved after the grid was built
            grid = self.occupancy_grid = OccupancyGrid(grid.bits.to(self.density.device), grid.cell, grid.stop_transmittance)
        rule = SkipRule(grid, float(self.d_scale.detach().exp()), self.density_shift, float(step))
        raw, feats, live = trilinear_rays(start, delta, counts, k, self.grid_size, *grids, skip=rule)
        return raw[0], self.activate_features(feats), live

    @torch.no_grad()
    def refresh_occupancy(self, step: float, settings: OccupancySettings = DEFAULT_SETTINGS) -> OccupancyGrid:
        """Rebuild :attr:`occupancy_grid` from the current density for a march step ``step`` (world units).

        The activation is increasing, so each coarse cell's largest raw density is taken first and only those
        (g^3, not n^3) are activated: the grid :meth:`OccupancyGrid.from_density` builds from
        :meth:`density_grid`, for a tenth of the work."""
        raw_max = cell_max(self.density[0], settings.cell)  # (g, g, g)
        self.occupancy_grid = OccupancyGrid.from_cell_max(self.activate(raw_max), step, settings)
        return self.occupancy_grid

    def activate_features(self, feats: Tensor) -> Tensor:
        """Interpolated features to rendered features (identity, or tanh into [-1, 1])."""
        return torch.tanh(feats) if self.feature_activation == "tanh" else feats

    def background(self, dirs: Tensor) -> Tensor:
        """Background features (R, C) for unit ray directions ``dirs`` (R, 3).

        The texture is indexed by (polar angle from +y, azimuth around y): bilinear, wrapping around in
        azimuth and clamped at the poles (:mod:`sjc_engine.background`).
        """
        if type(self).activate_features is VoxelField.activate_features:  # the activation in the same pass
            return background_lookup(self.bg, dirs, self.feature_activation == "tanh")
        return self.activate_features(background_lookup(self.bg, dirs, False))  # a subclass's own activation

    @torch.no_grad()
    def fill_background(self, value: float) -> None:
        """Set the background texture to the flat rendered colour ``value`` in every channel."""
        if self.feature_activation == "tanh":
            if not -1.0 < value < 1.0:
                raise ValueError(f"a tanh field's background must be in (-1, 1), got {value}")
            value = math.atanh(value)
        self.bg.fill_(value)

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
            "feature_activation": self.feature_activation,
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
