"""The field's surface as a clean triangle mesh: finer than the voxels, smooth, one piece, facing outward.

The steps, in order (each a small function below):

1. :func:`sample_density`: the density on a grid ``upsample`` times finer than the field's (the field is
   trilinear in its raw density, so this is exactly what the renderer sees, not a blur of voxels);
   then :func:`smooth_density`: a Gaussian blur of ``blur`` voxels, rescaled so that the object keeps its volume
   (score distillation leaves the density bumpy a few voxels wide: the surface came out pebbly);
2. :func:`close_volume`: enclosed cavities filled (renders constrain only what is visible, so a fitted
   object is often a shell around an interior at the initial density: inner sheets) and the box border
   pushed below the level, so the surface is closed;
3. :func:`march`: marching cubes with ``gradient_direction="ascent"`` (density grows *inward*; skimage's
   default ``"descent"`` winds every triangle inward);
4. :func:`remove_floaters`: connected pieces of the mesh smaller than ``keep_ratio`` x the largest one's
   volume are dropped (:func:`piece_sizes` measures every piece at once); when the mesh would have more faces
   than ``target_faces``, steps 1-4 run again at the spacing that gives about that many faces (marching
   cubes output is always closed and manifold);
5. :func:`smooth`: Taubin smoothing (a shrink step then an inflate step: removes voxel-scale jaggies without
   the volume loss of plain Laplacian smoothing);
6. :func:`decimate`: quadric decimation (fast-simplification) of what remains over ``target_faces``,
   kept only if the mesh stays closed;
7. :func:`orient_outward`: positive signed volume is checked, and the winding flipped if it ever is not.

Every vertex normal of the result comes from its faces, so normals and counter-clockwise winding agree.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from scipy import ndimage
from skimage import measure

from sjc_engine.cavities import fill_holes, large_pieces
from sjc_engine.field import VoxelField


BLUR = 1.0  # the density's smoothing before marching cubes, in field voxels (bench/RESULTS.md, "Smooth surfaces")


class EmptyMeshError(ValueError):
    """The density never crosses the threshold (or is above it everywhere): there is no surface."""


def grid_side(field: VoxelField, upsample: int = 2, max_side: int = 256) -> int:
    """Nodes per side of a grid ``upsample`` x finer than the field's (nodes on the field's), at most ``max_side``."""
    if upsample < 1:
        raise ValueError(f"upsample must be >= 1, got {upsample}")
    n = field.grid_size
    return (n - 1) * max(1, min(upsample, (max_side - 1) // (n - 1))) + 1


@torch.no_grad()
def sample_density(field: VoxelField, side: int) -> tuple[np.ndarray, float]:
    """Activated density at the nodes of a ``side``^3 grid spanning the box (trilinear in the raw density).

    Returns:
        ``(side, side, side)`` float32 array indexed ``[x, y, z]`` (nodes on the box corners, as the field's),
        and the spacing between its nodes in world units.
    """
    if side < 2:
        raise ValueError(f"side must be >= 2, got {side}")
    raw = field.density.detach().float().cpu()[None]  # (1, 1, N, N, N)
    if side != field.grid_size:
        raw = F.interpolate(raw, size=(side, side, side), mode="trilinear", align_corners=True)  # (1, 1, M, M, M)
    dens = field.activate(raw[0, 0].to(field.d_scale.device)).float().cpu().numpy()
    return dens, 2.0 * field.bbox / (side - 1)


def smooth_density(density: np.ndarray, level: float, sigma: float, keep_ratio: float = 0.1) -> np.ndarray:
    """``density`` blurred by a Gaussian of ``sigma`` nodes, rescaled so that the object keeps its volume: as many
    nodes lie above ``level`` as in its pieces (26-connected) of at least ``keep_ratio`` x the largest one's nodes
    before (a plain blur moves the surface in or out, by how fast the density rises behind it: a thin, faint
    object would shrink; specks the blur removes are not counted, or the object would grow by their volume).
    ``sigma`` 0, or no node above ``level`` (or every node): ``density`` as it is."""
    occ = density > level
    if sigma <= 0 or not occ.any() or occ.all():
        return density
    inside = int(large_pieces(occ, keep_ratio).sum())
    blurred = ndimage.gaussian_filter(density, sigma, mode="nearest")
    kth = blurred.size - inside
    at = float(np.partition(blurred.ravel(), kth)[kth])  # the inside-th largest value
    return blurred * np.float32(level / at) if at > 0 else blurred


def close_volume(density: np.ndarray, level: float) -> np.ndarray:
    """``density`` with enclosed cavities raised above ``level`` and a one-node border below it (closed surface).

    Raises:
        EmptyMeshError: when no node is above ``level``, or every node is.
    """
    occ = density > level
    if not occ.any() or occ.all():
        raise EmptyMeshError(
            f"no surface at threshold {level}: density ranges over [{density.min():.4g}, {density.max():.4g}]"
        )
    solid = fill_holes(occ)
    vol = np.where(solid & ~occ, np.maximum(density, 2.0 * level), density)
    return np.pad(vol, 1, mode="constant", constant_values=min(float(vol.min()), 0.5 * level))


def march(volume: np.ndarray, level: float, spacing: float, origin: float) -> trimesh.Trimesh:
    """Marching cubes of a density (high inside) at ``level``, in world units, faces wound outward.

    ``volume`` is padded by one node (see :func:`close_volume`): node ``i`` sits at ``origin + (i - 1) * spacing``.
    """
    verts, faces, _, _ = measure.marching_cubes(volume, level=level, gradient_direction="ascent")
    verts = (verts - 1.0) * spacing + origin
    return trimesh.Trimesh(vertices=verts, faces=faces, process=True)


def piece_sizes(mesh: trimesh.Trimesh) -> tuple[list[np.ndarray], np.ndarray]:
    """The connected pieces of ``mesh`` (face indices, as ``mesh.split(only_watertight=False)`` cuts them) and
    their sizes: the absolute volume of a watertight piece (every edge in exactly two of its faces), else
    1e-3 x its area. Computed on the whole mesh at once, without building a mesh per piece."""
    faces = np.asarray(mesh.faces)
    components = trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(faces)), min_len=1)
    if len(components) <= 1:
        return components, np.ones(len(components))
    label = np.empty(len(faces), dtype=np.int64)
    for i, c in enumerate(components):
        label[c] = i
    n = len(components)
    # watertight pieces: each of their (sorted) edges used by exactly two of their faces
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)  # (3F, 2)
    nv = np.int64(len(mesh.vertices))
    keys = (np.repeat(label, 3) * nv + edges[:, 0]) * nv + edges[:, 1]  # (3F,) piece and edge in one integer
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    bad = np.bincount(np.repeat(label, 3)[counts[inverse] != 2], minlength=n) > 0  # (n,) pieces with an open edge
    tri = np.asarray(mesh.vertices, dtype=np.float64)[faces]  # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3)
    volume = np.abs(np.bincount(label, weights=(cross * tri[:, 0]).sum(1), minlength=n)) / 6.0
    area = np.bincount(label, weights=np.linalg.norm(cross, axis=1), minlength=n) / 2.0
    return components, np.where(bad, area * 1e-3, volume)


def remove_floaters(mesh: trimesh.Trimesh, keep_ratio: float = 0.1) -> trimesh.Trimesh:
    """Keep the connected pieces whose volume is >= ``keep_ratio`` x the largest piece's (default 0.1)."""
    return _keep_pieces(mesh, *piece_sizes(mesh), keep_ratio)


def _kept(components: list[np.ndarray], sizes: np.ndarray, keep_ratio: float) -> list[np.ndarray]:
    return [c for c, s in zip(components, sizes) if s >= keep_ratio * sizes.max()]


def _keep_pieces(mesh: trimesh.Trimesh, components: list[np.ndarray], sizes: np.ndarray,
                 keep_ratio: float) -> trimesh.Trimesh:
    """``mesh`` cut to its pieces of size >= ``keep_ratio`` x the largest (pieces and sizes: :func:`piece_sizes`),
    each as ``mesh.split`` gives it, concatenated in their order."""
    if len(components) <= 1:
        return mesh
    kept = mesh.submesh(_kept(components, sizes, keep_ratio), only_watertight=False, repair=False)
    return trimesh.util.concatenate(kept) if len(kept) > 1 else kept[0]


def smooth(mesh: trimesh.Trimesh, iterations: int = 10, lamb: float = 0.5, nu: float = 0.53) -> trimesh.Trimesh:
    """Taubin smoothing (``lamb`` shrink then ``nu`` inflate, ``iterations`` times; 0 leaves the mesh as is)."""
    if iterations > 0:
        trimesh.smoothing.filter_taubin(mesh, lamb=lamb, nu=nu, iterations=iterations)
    return mesh


def _simplify(mesh: trimesh.Trimesh, count: int) -> trimesh.Trimesh:
    """One quadric decimation to ``count`` faces, duplicate faces (collapsed pockets) dropped."""
    import fast_simplification

    verts, faces = fast_simplification.simplify(
        np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces), target_count=int(count)
    )
    _, inverse, repeats = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    out = trimesh.Trimesh(vertices=verts, faces=faces[repeats[inverse.ravel()] == 1], process=True)
    out.remove_unreferenced_vertices()
    return out


def decimate(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Quadric decimation (fast-simplification) to ``target_faces`` faces, unless it would open a closed mesh.

    Quadric edge collapses do not check the link condition and can pinch thin parts into non-manifold
    edges; when the result is not watertight while the input was, the input is returned unchanged (the
    caller then keeps a few more faces than asked: :func:`extract_surface` marches at a spacing that gives
    about the budget, so the overshoot is small). A mesh within the budget is returned as it is.
    """
    if target_faces < 4:
        raise ValueError(f"target_faces must be >= 4, got {target_faces}")
    if len(mesh.faces) <= target_faces:
        return mesh
    import fast_simplification

    verts, faces = fast_simplification.simplify(
        np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces), target_count=int(target_faces)
    )
    out = trimesh.Trimesh(vertices=verts, faces=faces, process=True)
    out.remove_unreferenced_vertices()
    return out if out.is_watertight or not mesh.is_watertight else mesh


def orient_outward(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Flip the winding if the signed volume is negative (counter-clockwise seen from outside)."""
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def extract_surface(
    field: VoxelField,
    threshold: float,
    upsample: int = 2,
    smooth_iterations: int = 10,
    keep_ratio: float = 0.1,
    target_faces: int = 30_000,
    blur: float = BLUR,
) -> trimesh.Trimesh:
    """The field's surface at density ``threshold`` as a clean, outward-facing triangle mesh in world units.

    Args:
        field: the voxel field.
        threshold: iso-level in density units (``SJCConfig.mesh_threshold``).
        upsample: density samples per voxel side for marching cubes (default 2).
        smooth_iterations: Taubin smoothing iterations (default 10; 0: none).
        keep_ratio: pieces smaller than this fraction of the largest piece's volume are dropped (default 0.1).
        target_faces: the face budget (default 30,000); fewer faces are kept as they are.
        blur: standard deviation of the density's smoothing, in the field's voxels (default :data:`BLUR`; 0: none).

    Raises:
        EmptyMeshError: when the density does not cross ``threshold``.
    """
    side = grid_side(field, upsample)
    mesh = _march_field(field, side, threshold, blur, keep_ratio)
    pieces = piece_sizes(mesh)
    n_faces = sum(len(c) for c in _kept(*pieces, keep_ratio))  # faces after step 4, without building that mesh
    coarse = int((side - 1) * (target_faces / n_faces) ** 0.5) + 1 if n_faces > target_faces else 0
    if coarse >= 8:
        # faces grow as 1 / spacing^2: march again at the spacing that gives ~the budget, decimate the rest
        mesh = remove_floaters(_march_field(field, coarse, threshold, blur, keep_ratio), keep_ratio)
    else:
        mesh = _keep_pieces(mesh, *pieces, keep_ratio)
    mesh = smooth(mesh, smooth_iterations)
    mesh = decimate(mesh, target_faces)
    return orient_outward(mesh)


def _march_field(field: VoxelField, side: int, threshold: float, blur: float, keep_ratio: float) -> trimesh.Trimesh:
    """Steps 1-3: sample at ``side``^3 nodes, smooth (``blur`` field voxels), close, march."""
    density, spacing = sample_density(field, side)
    density = smooth_density(density, threshold, blur * (side - 1) / (field.grid_size - 1), keep_ratio)
    return march(close_volume(density, threshold), threshold, spacing, -field.bbox)
