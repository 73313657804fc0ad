"""Mesh export: marching cubes on the density, floaters removed, real RGB vertex colours from renderings.

Colours come from what the field actually looks like: the field is rendered from several views, the feature
images are decoded to RGB (a VAE decode for latent models, ``[-1, 1] -> [0, 1]`` for pixel models), each vertex
is projected into every view, and the colours of the views where it is visible (its distance matches the
rendered depth at its pixel) are averaged, weighted by how squarely the view sees the surface. The background's
share is removed from the renderings first (features divided by opacity), so haze does not wash colours out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Collection

import numpy as np
import torch
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage import measure
from torch import Tensor

from sjc_engine.cameras import Camera, spherical_camera
from sjc_engine.export.video import identity_decode
from sjc_engine.field import VoxelField
from sjc_engine.renderer import render_image

Decode = Callable[[Tensor], Tensor]
MESH_FORMATS = ("glb", "ply", "obj")


class EmptyMeshError(ValueError):
    """The density never crosses the threshold: there is no surface to extract."""


def _keep_large_components(occ: np.ndarray, keep_ratio: float) -> np.ndarray:
    """Bool mask of the occupied voxels in components with >= ``keep_ratio`` x the largest one's voxels."""
    labels, count = ndimage.label(occ, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return occ
    sizes = np.bincount(labels.ravel())[1:]  # (count,)
    keep = np.flatnonzero(sizes >= keep_ratio * sizes.max()) + 1
    return np.isin(labels, keep)


@torch.no_grad()
def solid_occupancy(field: VoxelField, threshold: float, keep_ratio: float = 0.1) -> np.ndarray:
    """Bool (N, N, N) ``[x, y, z]``: density above ``threshold``, floaters dropped, enclosed cavities filled.

    Renderings only constrain what is visible, so a fitted object is often a dense shell around an interior
    left at the initial density; filling cavities makes the occupancy (and the mesh) solid. Use this for IoU.
    """
    occ = field.density_grid().float().cpu().numpy() > threshold
    if not occ.any():
        return occ
    return ndimage.binary_fill_holes(_keep_large_components(occ, keep_ratio))


def color_views(n_views: int, size: int, radius: float, fov_deg: float) -> list[Camera]:
    """Cameras around the origin for colouring: azimuths evenly spaced, elevations alternating +30 / -15 deg."""
    return [
        spherical_camera(360.0 * i / n_views, 30.0 if i % 2 == 0 else -15.0, radius, fov_deg, size)
        for i in range(n_views)
    ]


@torch.no_grad()
def vertex_colors_from_views(
    field: VoxelField,
    vertices: np.ndarray,
    normals: np.ndarray,
    decode: Decode,
    cameras: list[Camera],
    step_ratio: float = 0.5,
    depth_tol: float | None = None,
) -> np.ndarray:
    """Average decoded colours (V, 3) in [0, 1] of ``vertices`` over the ``cameras`` that see them.

    A vertex is visible in a view when its pixel is opaque (opacity > 0.5) and its distance from the camera is
    within ``depth_tol`` (default: 3 voxels + 0.02) of the rendered surface distance there. Vertices no view
    sees take the colour of the nearest vertex that one does.
    """
    V = vertices.shape[0]
    tol = depth_tol if depth_tol is not None else 3 * field.voxel_size + 0.02
    verts = torch.from_numpy(np.ascontiguousarray(vertices)).float()  # (V, 3)
    nrm = torch.from_numpy(np.ascontiguousarray(normals)).float()  # (V, 3)
    acc = torch.zeros(V, 3)
    wsum = torch.zeros(V)
    for cam in cameras:
        out = render_image(field, cam, step_ratio, bg_depth=0.0)
        # the object's own features: take the background's share out and renormalise by the opacity
        _, dirs = cam.rays(device=field.density.device, dtype=field.density.dtype)
        bg = field.background(dirs.reshape(-1, 3)).T.reshape_as(out.image)  # (C, H, W)
        op = out.opacity[None]  # (1, H, W)
        fg = (out.image - (1 - op) * bg) / op.clamp(min=1e-3)
        rgb = decode(fg[None])[0].float().cpu().clamp(0, 1)  # (3, H', W')
        opacity = out.opacity.cpu()  # (H, W)
        surf = (out.depth.cpu() / opacity.clamp(min=1e-6))  # (H, W) expected distance of the surface
        c2w = cam.c2w.float()
        eye = c2w[:3, 3]
        rel = verts - eye  # (V, 3)
        pc = rel @ c2w[:3, :3]  # (V, 3) camera coordinates (x right, y up, -z forward)
        z = -pc[:, 2]
        in_front = z > 1e-6
        f = cam.focal
        px = f * pc[:, 0] / z.clamp(min=1e-6) + cam.width / 2  # continuous pixel coords, centres at +0.5
        py = -f * pc[:, 1] / z.clamp(min=1e-6) + cam.height / 2
        col, row = px.floor().long(), py.floor().long()
        inside = in_front & (col >= 0) & (col < cam.width) & (row >= 0) & (row < cam.height)
        col, row = col.clamp(0, cam.width - 1), row.clamp(0, cam.height - 1)
        dist = rel.norm(dim=-1)
        visible = inside & (opacity[row, col] > 0.5) & ((dist - surf[row, col]).abs() < tol)
        # colour: bilinear lookup in the decoded image (which may be larger than the render)
        gx = px / cam.width * 2 - 1
        gy = py / cam.height * 2 - 1
        grid = torch.stack([gx, gy], -1).view(1, 1, V, 2)
        sample = torch.nn.functional.grid_sample(rgb[None], grid, align_corners=False, padding_mode="border")
        sample = sample.view(3, V).T  # (V, 3)
        facing = (-(rel / dist[:, None].clamp(min=1e-6)) * nrm).sum(-1).clamp(min=0.05)  # (V,)
        w = visible.float() * facing
        acc += w[:, None] * sample
        wsum += w
    seen = wsum > 0
    colors = torch.zeros(V, 3)
    colors[seen] = acc[seen] / wsum[seen, None]
    if seen.any() and not seen.all():
        tree = cKDTree(vertices[seen.numpy()])
        _, nearest = tree.query(vertices[~seen.numpy()])
        colors[~seen] = colors[seen][torch.from_numpy(np.asarray(nearest))]
    elif not seen.any():
        colors[:] = 0.5
    return colors.numpy()


@torch.no_grad()
def extract_mesh(
    field: VoxelField,
    threshold: float,
    decode: Decode | None = None,
    views: int = 8,
    size: int = 64,
    radius: float | None = None,
    fov_deg: float = 60.0,
    keep_ratio: float = 0.1,
    step_ratio: float = 0.5,
) -> trimesh.Trimesh:
    """A coloured triangle mesh of the field's surface.

    Args:
        field: the voxel field.
        threshold: iso-level in density units (see ``SJCConfig.mesh_threshold``).
        decode: rendered features (B, C, H, W) to RGB (B, 3, H', W') in [0, 1]; ``None``: pixels in [-1, 1].
        views: renderings used for the vertex colours.
        size: side of those renderings in pixels (before decoding).
        radius: camera distance of those views (default ``2.2 * bbox``, which sees the whole box at 60 deg).
        fov_deg: their field of view.
        keep_ratio: occupied components smaller than this fraction of the largest are dropped (floaters).
        step_ratio: ray-march step of the colour renders.

    Returns:
        ``trimesh.Trimesh`` in world units with ``visual.vertex_colors`` (V, 4) uint8.

    Raises:
        EmptyMeshError: when no voxel is above (or none below) ``threshold``.
    """
    decode = decode or identity_decode
    density = field.density_grid().float().cpu().numpy()  # (N, N, N) [x, y, z]
    occ = density > threshold
    if not occ.any() or occ.all():
        raise EmptyMeshError(
            f"no surface at threshold {threshold}: density ranges over [{density.min():.4g}, {density.max():.4g}]"
        )
    solid = solid_occupancy(field, threshold, keep_ratio)
    vol = np.where(occ & ~solid, np.minimum(density, threshold * 0.5), density)  # floaters pushed below the level
    vol = np.where(solid & ~occ, np.maximum(density, threshold * 2.0), vol)  # enclosed cavities filled
    vol = np.pad(vol, 1, mode="constant", constant_values=min(float(vol.min()), threshold * 0.5))  # closed surface
    verts, faces, normals, _ = measure.marching_cubes(vol, level=threshold)
    n = field.grid_size
    verts = (verts - 1.0) * (2.0 * field.bbox / (n - 1)) - field.bbox  # index -> world
    cams = color_views(views, size, radius or 2.2 * field.bbox, fov_deg)
    colors = vertex_colors_from_views(field, verts, normals, decode, cams, step_ratio)
    rgba = np.concatenate([colors, np.ones_like(colors[:, :1])], axis=1)
    rgba = (rgba * 255 + 0.5).astype(np.uint8)  # (V, 4)
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, vertex_normals=normals, vertex_colors=rgba, process=False)
    return mesh


def save_mesh(
    mesh: trimesh.Trimesh, out_dir: str | Path, formats: Collection[str] = MESH_FORMATS, stem: str = "mesh"
) -> dict[str, Path]:
    """Write ``mesh`` as ``{stem}.glb`` / ``.ply`` / ``.obj`` (vertex colours kept in each) into ``out_dir``.

    Returns ``{format: path}``; the OBJ carries its colours as ``v x y z r g b`` lines (no material file).
    """
    unknown = set(formats) - set(MESH_FORMATS)
    if unknown:
        raise ValueError(f"unknown mesh formats {sorted(unknown)}; choose from {MESH_FORMATS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "obj":
            data = trimesh.exchange.obj.export_obj(mesh, include_color=True, include_normals=True, include_texture=False)
            path.write_text(data)
        else:
            mesh.export(path, file_type=fmt)
        paths[fmt] = path
    return paths
