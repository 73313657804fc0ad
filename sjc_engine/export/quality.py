"""How well an exported mesh matches a known shape: volume IoU and Chamfer distance against an SDF.

Used by the mesh tests and the quality bench. ``sdf`` maps points (P, 3) to signed distances (P,), negative
inside (the analytic shapes of ``training/shapes.py`` wrapped for numpy, or any closed-form SDF).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import trimesh
from scipy.spatial import cKDTree

SDF = Callable[[np.ndarray], np.ndarray]


def mesh_iou(mesh: trimesh.Trimesh, sdf: SDF, pitch: float = 0.01, pad: int = 4) -> float:
    """Volume IoU of the solid ``mesh`` (voxelised at ``pitch``, inside filled) with ``sdf < 0``.

    The comparison grid is the mesh's voxel grid grown by ``pad`` voxels on every side, so shape parts just
    outside the mesh count against it (a shape much larger than the mesh is not fully counted: use a
    mesh of the right size, as any fit is).
    """
    vox = mesh.voxelized(pitch).fill()
    occ = np.pad(np.asarray(vox.matrix, dtype=bool), pad)  # (X, Y, Z)
    origin = np.asarray(vox.transform)[:3, 3] - pad * pitch  # centre of voxel (0, 0, 0)
    idx = np.stack(np.meshgrid(*(np.arange(s) for s in occ.shape), indexing="ij"), axis=-1).reshape(-1, 3)
    gt = (sdf(origin + idx * pitch) < 0).reshape(occ.shape)
    union = (occ | gt).sum()
    return float((occ & gt).sum() / union) if union else 0.0


def surface_samples(sdf: SDF, n: int, extent: float = 1.0, seed: int = 0, eps: float = 1e-4) -> np.ndarray:
    """About ``n`` points on the zero level of ``sdf`` (random points in ``[-extent, extent]^3`` projected
    along the SDF's gradient, three Newton steps, kept where ``|sdf| < 1e-3``)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-extent, extent, size=(4 * n, 3))
    for _ in range(3):
        d = sdf(p)
        grad = np.stack([(sdf(p + eps * e) - sdf(p - eps * e)) / (2 * eps) for e in np.eye(3)], axis=1)
        p = p - d[:, None] * grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True) ** 2, 1e-12)
    p = p[np.abs(sdf(p)) < 1e-3]
    return p[:n]


def chamfer(mesh: trimesh.Trimesh, sdf: SDF, n: int = 20_000, seed: int = 0) -> float:
    """Symmetric Chamfer distance (mean of both directions' mean nearest-point distances, world units)
    between ``n`` points sampled on ``mesh`` and ``n`` on the zero level of ``sdf``.

    Mesh to shape is exact (``|sdf|`` at the mesh's points); shape to mesh takes the nearest of ``10 n`` points
    sampled on the mesh, which overestimates by about a third of their spacing (~0.002 for a 1-unit object
    at n = 20,000)."""
    on_mesh = np.asarray(trimesh.sample.sample_surface(mesh, 10 * n, seed=seed)[0])
    mesh_to_shape = np.abs(sdf(on_mesh[:n])).mean()  # exact for a true SDF
    on_shape = surface_samples(sdf, n, seed=seed)
    shape_to_mesh = cKDTree(on_mesh).query(on_shape)[0].mean()
    return float((mesh_to_shape + shape_to_mesh) / 2)
