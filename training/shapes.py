"""Analytic shapes centred at the origin, as signed distance functions (SDFs).

These are the objects the embedded model is trained on and the 3D ground truth of the quality bench.
Every shape fits in a ball of radius ~0.52 around the origin (well inside the scene box [-1, 1]^3 and,
with the embedded model's cameras, well inside the frame at every field of view). World +y is up;
the torus lies flat in the xz-plane so its hole is seen from above; cone and cylinder stand on the y axis.

All functions take points ``(..., 3)`` (any batch shape, any float dtype) and return ``(...)``:
negative inside, positive outside, zero on the surface.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

SDF = Callable[[Tensor], Tensor]

# Sizes (world units). Bounding radii: sphere 0.42, cube 0.52, cylinder 0.45, cone 0.52, torus 0.46.
SPHERE_RADIUS = 0.42
CUBE_HALF = 0.30
CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT = 0.32, 0.32
CONE_RADIUS, CONE_HALF_HEIGHT = 0.38, 0.36
TORUS_MAJOR, TORUS_MINOR = 0.32, 0.14


def sdf_sphere(p: Tensor, radius: float = SPHERE_RADIUS) -> Tensor:
    """Sphere of ``radius``."""
    return p.norm(dim=-1) - radius


def sdf_cube(p: Tensor, half: float = CUBE_HALF) -> Tensor:
    """Axis-aligned cube with half side ``half`` (exact box SDF)."""
    q = p.abs() - half  # (..., 3)
    outside = q.clamp(min=0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp(max=0)
    return outside + inside


def sdf_cylinder(p: Tensor, radius: float = CYLINDER_RADIUS, half_height: float = CYLINDER_HALF_HEIGHT) -> Tensor:
    """Capped cylinder around the y axis."""
    r = torch.stack([p[..., 0], p[..., 2]], dim=-1).norm(dim=-1)
    d = torch.stack([r - radius, p[..., 1].abs() - half_height], dim=-1)  # (..., 2)
    return d.max(dim=-1).values.clamp(max=0) + d.clamp(min=0).norm(dim=-1)


def sdf_cone(p: Tensor, radius: float = CONE_RADIUS, half_height: float = CONE_HALF_HEIGHT) -> Tensor:
    """Solid cone on the y axis: base disc of ``radius`` at y = -half_height, apex at y = +half_height.

    Exact capped-cone distance (Inigo Quilez's ``sdCappedCone`` with top radius 0).
    """
    h, r1, r2 = half_height, radius, 0.0
    qx = torch.stack([p[..., 0], p[..., 2]], dim=-1).norm(dim=-1)
    qy = p[..., 1]
    k1x, k1y = r2, h
    k2x, k2y = r2 - r1, 2.0 * h
    cap_r = torch.where(qy < 0, torch.full_like(qx, r1), torch.full_like(qx, r2))
    cax = qx - torch.minimum(qx, cap_r)
    cay = qy.abs() - h
    t = (((k1x - qx) * k2x + (k1y - qy) * k2y) / (k2x**2 + k2y**2)).clamp(0.0, 1.0)
    cbx = qx - k1x + k2x * t
    cby = qy - k1y + k2y * t
    sign = torch.where((cbx < 0) & (cay < 0), -1.0, 1.0).to(p.dtype)
    d2 = torch.minimum(cax**2 + cay**2, cbx**2 + cby**2)
    return sign * d2.sqrt()


def sdf_torus(p: Tensor, major: float = TORUS_MAJOR, minor: float = TORUS_MINOR) -> Tensor:
    """Torus lying flat in the xz-plane (its hole along the y axis)."""
    r = torch.stack([p[..., 0], p[..., 2]], dim=-1).norm(dim=-1)
    return torch.stack([r - major, p[..., 1]], dim=-1).norm(dim=-1) - minor


SHAPES: dict[str, SDF] = {
    "cube": sdf_cube,
    "sphere": sdf_sphere,
    "cone": sdf_cone,
    "cylinder": sdf_cylinder,
    "torus": sdf_torus,
}

# Exact volumes (used by tests as a sanity check of the SDFs).
VOLUMES: dict[str, float] = {
    "cube": (2 * CUBE_HALF) ** 3,
    "sphere": 4.0 / 3.0 * torch.pi * SPHERE_RADIUS**3,
    "cone": torch.pi * CONE_RADIUS**2 * (2 * CONE_HALF_HEIGHT) / 3.0,
    "cylinder": torch.pi * CYLINDER_RADIUS**2 * (2 * CYLINDER_HALF_HEIGHT),
    "torus": 2 * torch.pi**2 * TORUS_MAJOR * TORUS_MINOR**2,
}


def get_sdf(shape: str) -> SDF:
    """The SDF of ``shape``; raises ``KeyError`` listing the known shapes."""
    if shape not in SHAPES:
        raise KeyError(f"unknown shape {shape!r}; known shapes: {sorted(SHAPES)}")
    return SHAPES[shape]


def sdf(shape: str, points: Tensor) -> Tensor:
    """Signed distance of ``points`` (..., 3) to ``shape``, shape (...)."""
    return get_sdf(shape)(points)


def occupancy(shape: str, points: Tensor) -> Tensor:
    """Boolean inside-mask of ``points`` (..., 3) for ``shape``, shape (...)."""
    return sdf(shape, points) <= 0


def grid_points(grid_size: int, bbox: float = 1.0) -> Tensor:
    """Voxel-centre coordinates of a ``grid_size``^3 grid over ``[-bbox, bbox]^3``, shape (N, N, N, 3).

    Axis order (x, y, z) on dims (0, 1, 2); match it to the field's grid layout before comparing.
    """
    c = (torch.arange(grid_size, dtype=torch.float32) + 0.5) / grid_size * 2 * bbox - bbox
    xx, yy, zz = torch.meshgrid(c, c, c, indexing="ij")  # (N, N, N) each
    return torch.stack([xx, yy, zz], dim=-1)  # (N, N, N, 3)


def rotate_y(points: Tensor, angle_rad: float) -> Tensor:
    """Rotate ``points`` (..., 3) about the vertical (y) axis by ``angle_rad``."""
    c, s = float(torch.cos(torch.tensor(angle_rad))), float(torch.sin(torch.tensor(angle_rad)))
    x, y, z = points.unbind(-1)
    return torch.stack([c * x + s * z, y, -s * x + c * z], dim=-1)
