"""Mesh export: the field's surface (:mod:`.surface`), coloured from the field (:mod:`.colors`), unwrapped and
textured (:mod:`.texture`), written as GLB / OBJ+MTL+PNG / PLY / STL (:mod:`.writers`).

:func:`extract_mesh` gives the clean surface with sRGB vertex colours; :func:`save_mesh` writes it in the
chosen formats, baking the texture from ``color_fn`` (the field's colour at any surface point) when given,
else from the vertex colours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Collection

import numpy as np
import torch
import trimesh
from torch import Tensor

from sjc_engine.cavities import fill_holes, large_pieces
from sjc_engine.export.colors import Decode, smoothed_features, surface_colors
from sjc_engine.export.delight import fit_shading, remove_shading
from sjc_engine.export.formats import MESH_FORMATS
from sjc_engine.export.surface import BLUR, EmptyMeshError, extract_surface
from sjc_engine.export.texture import ColorFn, bake_texture, unwrap
from sjc_engine.export.writers import textured_mesh, write_glb, write_obj, write_ply, write_stl
from sjc_engine.field import VoxelField

__all__ = ["EmptyMeshError", "MESH_FORMATS", "extract_mesh", "save_mesh", "solid_occupancy"]


@torch.no_grad()
def solid_occupancy(field: VoxelField, threshold: float, keep_ratio: float = 0.1) -> np.ndarray:
    """Bool (N, N, N) ``[x, y, z]``: density above ``threshold``, pieces smaller than ``keep_ratio`` x the
    largest dropped (26-connected), enclosed cavities filled. The field's solid at its own nodes, for IoU."""
    occ = field.density_grid().float().cpu().numpy() > threshold
    if not occ.any():
        return occ
    return fill_holes(large_pieces(occ, keep_ratio))


def extract_mesh(
    field: VoxelField,
    threshold: float,
    decode: Decode | None = None,
    is_latent: bool = False,
    target_faces: int = 30_000,
    upsample: int = 2,
    smooth_iterations: int = 10,
    keep_ratio: float = 0.1,
    views: int = 12,
    size: int = 64,
    blur: float = BLUR,
    features: Tensor | None = None,
    baked_light: tuple[float, float, float] | None = None,
) -> trimesh.Trimesh:
    """The field's clean surface (see :func:`~sjc_engine.export.surface.extract_surface`) with sRGB vertex colours.

    Args:
        field: the voxel field.
        threshold: iso-level in density units (``SJCConfig.mesh_threshold``).
        decode: features (B, C, H, W) to RGB in [0, 1]; ``None``: pixel features in [-1, 1].
        is_latent: the features are VAE latents (colours then come from decoded renderings).
        target_faces, upsample, smooth_iterations, keep_ratio, blur: see ``extract_surface``.
        views, size: renderings (and their size before decoding) used for latent fields' colours.
        features: raw features a pixel field's colours are taken from (default None:
            :func:`~sjc_engine.export.colors.smoothed_features` at ``threshold``, computed here).
        baked_light: direction towards the light the model's training images were shaded by (a pixel model's
            ``sjc_model.json``, ``"baked_light"``); the shading fitted along it is taken out of the colours
            (:mod:`~sjc_engine.export.delight`) and kept as ``mesh.metadata["shading"]`` for the texture.
            Default None: the colours as the field shows them.

    Raises:
        EmptyMeshError: when the density does not cross ``threshold``.
    """
    mesh = extract_surface(field, threshold, upsample, smooth_iterations, keep_ratio, target_faces, blur)
    if features is None and not is_latent:
        features = smoothed_features(field, threshold)
    colors = surface_colors(field, mesh.vertices, mesh.vertex_normals, decode, is_latent, views, size,
                            features=features)
    if baked_light is not None and not is_latent:
        shading = fit_shading(colors, mesh.vertex_normals, baked_light)
        colors = remove_shading(colors, mesh.vertex_normals, shading)
        mesh.metadata["shading"] = shading
    rgba = np.concatenate([colors, np.ones_like(colors[:, :1])], axis=1)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=(rgba * 255 + 0.5).astype(np.uint8))
    return mesh


def save_mesh(
    mesh: trimesh.Trimesh,
    out_dir: str | Path,
    formats: Collection[str] = MESH_FORMATS,
    stem: str = "mesh",
    color_fn: ColorFn | None = None,
    texture_size: int = 1024,
) -> dict[str, Path]:
    """Write ``mesh`` (from :func:`extract_mesh`) as ``{stem}.glb`` / ``.obj`` (+ ``.mtl``, ``.png``) / ``.ply`` / ``.stl``.

    Args:
        mesh: a mesh with vertex colours.
        out_dir: the folder (created).
        formats: any of :data:`MESH_FORMATS`.
        stem: the files' base name.
        color_fn: the surface colour at points and normals, for the texture (default: blend the vertex colours).
        texture_size: side of the base-colour texture in texels (default 1024).

    Returns:
        ``{file name: path}`` of every file written (the OBJ's ``.mtl`` and ``.png`` included).
    """
    unknown = set(formats) - set(MESH_FORMATS)
    if unknown:
        raise ValueError(f"unknown mesh formats {sorted(unknown)}; choose from {list(MESH_FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    vertex_colors = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(np.float32) / 255.0  # (V, 3)
    if {"glb", "obj"} & set(formats):
        atlas = unwrap(mesh, texture_size)
        if color_fn is None:
            texture = bake_texture(atlas, size=texture_size, vertex_colors=vertex_colors)
        else:
            texture = bake_texture(atlas, color_fn, texture_size)
        textured = textured_mesh(atlas, texture)
        if "glb" in formats:
            written.append(write_glb(textured, out_dir / f"{stem}.glb"))
        if "obj" in formats:
            written.extend(write_obj(textured, out_dir / f"{stem}.obj"))
    if "ply" in formats:
        written.append(write_ply(mesh, vertex_colors, out_dir / f"{stem}.ply"))
    if "stl" in formats:
        written.append(write_stl(mesh, out_dir / f"{stem}.stl"))
    return {p.name: p for p in written}
