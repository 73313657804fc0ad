"""Taking a model's training light out of a mesh's colours, so that a viewer lights the mesh once, not twice.

The embedded model learnt from renders shaded by one fixed world light (``training/dataset.py``: Lambertian, the
light towards ``LIGHT_DIR``, 0.4 ambient + 0.6 diffuse), and SJC's field learns that shading into its colours: the
sides turned away from the light come out darker (the green sphere's underside at a third of its top's
brightness). A rendering of the field shows that as light, which is right for the turntable and the thumbnail;
but a mesh viewer lights the mesh again, so those sides show the shading twice, near black. A model that knows
its training light says so in ``sjc_model.json`` (``"baked_light": {"direction": [x, y, z]}``, world frame, +y
up, pointing towards the light), and the mesh's colours have that shading divided out:

1. :func:`fit_shading`: how much of the surface's brightness (the mean of its three channels) follows the light,
   by least squares over the mesh's vertices: ``brightness ~ ambient + diffuse * max(0, n . l)``. A field that
   learnt little shading gets a small ``diffuse`` and keeps its colours; one brighter away from the light (a
   negative fit) is left alone.
2. :func:`remove_shading`: each colour times ``(ambient + diffuse) / (ambient + diffuse * max(0, n . l))``, at
   most :data:`MAX_GAIN` and at most until its largest channel reaches 1 (so it keeps its hue): a surface facing
   the light keeps its colour (as the training's albedo shows there), the others are brought up to it.

Only the fitted part goes, and only for models that declare their light (Stable Diffusion's lighting is the
image's own, with no one direction, so latent models keep their colours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

MAX_GAIN = 2.5
"""Largest factor a colour is brightened by (the training light's 1 / ambient: its unlit sides' darkening)."""


@dataclass(frozen=True)
class Shading:
    """A fitted shading ``ambient + diffuse * max(0, n . direction)`` in brightness units (display values).

    Attributes:
        direction: (3,) unit vector towards the light, world frame.
        ambient: brightness of a surface turned away from the light.
        diffuse: what facing the light adds; 0 means no shading to take out.
    """

    direction: np.ndarray
    ambient: float
    diffuse: float

    def gain(self, normals: np.ndarray) -> np.ndarray:
        """The factor (P,) that takes this shading out of colours at unit ``normals`` (P, 3); 1 where there is
        none to take out, at most :data:`MAX_GAIN`."""
        if self.diffuse <= 0:
            return np.ones(len(normals), dtype=np.float32)
        lit = np.clip(normals @ self.direction, 0.0, None)  # (P,)
        shade = self.ambient + self.diffuse * lit  # (P,)
        full = self.ambient + self.diffuse
        return (full / np.maximum(shade, full / MAX_GAIN)).astype(np.float32)  # 1 facing the light


def unit_direction(direction: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """``direction`` as a unit (3,) vector; ``ValueError`` for anything else (wrong length, zero, not finite)."""
    d = np.asarray(direction, dtype=np.float64).reshape(-1)
    if d.shape != (3,) or not np.all(np.isfinite(d)) or np.linalg.norm(d) < 1e-9:
        raise ValueError(f"a light direction is three finite numbers, not all zero; got {direction!r}")
    return d / np.linalg.norm(d)


def fit_shading(colors: np.ndarray, normals: np.ndarray, direction: tuple[float, float, float] | np.ndarray) -> Shading:
    """The shading along ``direction`` that best explains the brightness of ``colors`` (P, 3) in [0, 1] at unit
    ``normals`` (P, 3): least squares of the channels' mean on ``[1, max(0, n . l)]``. A fit whose diffuse part
    is not positive, or whose ambient part is negative beyond rounding, comes back with ``diffuse`` 0 (nothing to take out)."""
    d = unit_direction(direction)
    if len(colors) != len(normals) or colors.ndim != 2 or normals.shape[-1] != 3:
        raise ValueError(f"colors (P, 3) and normals (P, 3) must match, got {colors.shape} and {normals.shape}")
    lit = np.clip(np.asarray(normals, dtype=np.float64) @ d, 0.0, None)  # (P,)
    brightness = np.asarray(colors, dtype=np.float64)[:, :3].mean(1)  # (P,)
    if len(lit) < 2 or np.ptp(lit) < 1e-6:  # every point lit alike: nothing tells shading from colour
        return Shading(d, float(brightness.mean()) if len(lit) else 0.0, 0.0)
    design = np.stack([np.ones_like(lit), lit], 1)  # (P, 2)
    (ambient, diffuse), *_ = np.linalg.lstsq(design, brightness, rcond=None)
    if diffuse <= 0 or ambient < -1e-6:
        return Shading(d, float(brightness.mean()), 0.0)
    return Shading(d, max(float(ambient), 0.0), float(diffuse))


def remove_shading(colors: np.ndarray, normals: np.ndarray, shading: Shading) -> np.ndarray:
    """``colors`` (P, 3) in [0, 1] with ``shading`` divided out at ``normals`` (P, 3). A colour is brightened only
    until its largest channel reaches 1, so that it keeps its hue (clipping one channel would turn a purple
    magenta and an orange yellow)."""
    c = np.clip(np.asarray(colors, dtype=np.float32), 0.0, 1.0)  # (P, 3)
    gain = shading.gain(np.asarray(normals, dtype=np.float64))  # (P,)
    gain = np.minimum(gain, 1.0 / np.maximum(c.max(1), 1e-6))  # >= 1; stops where a channel reaches 1, hue kept
    return np.clip(c * gain[:, None], 0.0, 1.0)  # the clip only for rounding


def delit(color_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], shading: Shading
          ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``color_fn(points, normals)`` with ``shading`` taken out of what it returns (for the texture's texels)."""
    return lambda points, normals: remove_shading(color_fn(points, normals), normals, shading)
