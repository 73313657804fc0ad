"""A UV atlas (xatlas) and a base-colour texture baked into it.

:func:`unwrap` cuts the mesh into charts and packs them into the unit square (vertices on seams are
duplicated); :func:`rasterize_atlas` finds, for every texel, the triangle covering it and the texel's
barycentric coordinates there; :func:`bake_texture` asks a colour function for the colour at each
covered texel's 3D surface point and then :func:`dilate` fills the texels between charts with the nearest
chart colour, so bilinear filtering and mip-maps never pull background into the seams.

UVs follow the OBJ/trimesh convention: ``v`` grows upward, texel row 0 is ``v = 1`` (trimesh's glTF
writer flips ``v`` into glTF's top-left origin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import trimesh
from PIL import Image, ImageDraw
from scipy import ndimage

ColorFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(points (P, 3), unit normals (P, 3)) -> colours (P, 3) in [0, 1]."""


@dataclass
class Atlas:
    """A mesh with UVs.

    Attributes:
        vertices: (V', 3) positions (seam vertices duplicated).
        faces: (F, 3) triangles, same winding as the input.
        uv: (V', 2) texture coordinates in [0, 1].
        normals: (V', 3) unit vertex normals of the input mesh.
        source: (V',) index of each vertex in the input mesh.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    normals: np.ndarray
    source: np.ndarray


#: A chart's boundary is at most this fraction of the mesh's bounding-box diagonal (xatlas's
#: ``max_boundary_length``; its default, 0, sets no bound). Unbounded, xatlas grows a few large charts and that took
#: 0.7 s for the embedded model's red cube (7,332 faces, 17 charts) and 1.5 s for its blue torus (9,504 faces, 20
#: charts), holding the GIL throughout; bounded, 0.16 and 0.19 s (118 and 138 charts), the texture nearly as well
#: used (65 / 62 % of it against 67 / 63 %). The texels are baked from the surface point each covers, so a seam
#: between charts shows no colour step.
CHART_BOUNDARY = 0.65


def unwrap(mesh: trimesh.Trimesh, texture_size: int = 1024, padding: int = 2) -> Atlas:
    """UV-unwrap ``mesh`` with xatlas, packed for a ``texture_size`` texture with ``padding`` texels between charts."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.uint32))
    charts = xatlas.ChartOptions()
    charts.max_boundary_length = float(CHART_BOUNDARY * np.linalg.norm(np.ptp(np.asarray(mesh.vertices), axis=0)))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(charts, pack)
    vmap, faces, uv = atlas.get_mesh(0)
    vmap = vmap.astype(np.int64)
    return Atlas(
        vertices=np.asarray(mesh.vertices)[vmap],
        faces=faces.astype(np.int64),
        uv=uv.astype(np.float64),
        normals=np.asarray(mesh.vertex_normals)[vmap],
        source=vmap,
    )


def rasterize_atlas(uv: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each texel of a ``size`` x ``size`` texture, and where.

    Returns:
        ``tri`` (size, size) int: the covering face index, -1 where none; and ``bary`` (size, size, 3): the
        barycentric coordinates of each texel centre in its face (clamped into the face, so texels on a
        chart's rim take the rim's values).
    """
    pix = np.empty_like(uv)
    pix[:, 0] = uv[:, 0] * size
    pix[:, 1] = (1.0 - uv[:, 1]) * size  # texel rows run downward from v = 1
    ids = Image.new("I", (size, size), 0)
    core = ImageDraw.Draw(ids).draw  # what ImageDraw.polygon(xy, fill=v, outline=v) calls: one filled polygon
    corners = (pix[faces] - 0.5).tolist()  # (F, 3, 2) in texel units; PIL fills pixels by their top-left corner
    for i, tri in enumerate(corners):
        core.draw_polygon([tuple(c) for c in tri], core.draw_ink(i + 1), 1)
    tri_id = np.asarray(ids, dtype=np.int64) - 1  # (size, size)
    bary = np.zeros((size, size, 3))
    ys, xs = np.nonzero(tri_id >= 0)
    t = tri_id[ys, xs]
    a, b, c = (pix[faces[t, j]] for j in range(3))  # (T, 2) each
    p = np.stack([xs + 0.5, ys + 0.5], axis=1)  # texel centres
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    w = np.clip(np.stack([1.0 - w1 - w2, w1, w2], axis=1), 0.0, None)
    bary[ys, xs] = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
    return tri_id, bary


def dilate(texture: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Every texel not ``covered`` (H, W) takes the value of the nearest covered texel."""
    if covered.all() or not covered.any():
        return texture
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return texture[iy, ix]


def bake_texture(
    atlas: Atlas, color_fn: ColorFn | None = None, size: int = 1024, vertex_colors: np.ndarray | None = None
) -> np.ndarray:
    """A ``size`` x ``size`` (H, W, 3) uint8 base-colour texture.

    Each covered texel gets ``color_fn`` at its 3D surface point and normal or, without ``color_fn``, the
    barycentric blend of ``vertex_colors`` ((V, 3) in [0, 1], indexed like the atlas's ``source`` mesh).
    """
    if (color_fn is None) == (vertex_colors is None):
        raise ValueError("bake_texture needs exactly one of color_fn and vertex_colors")
    tri_id, bary = rasterize_atlas(atlas.uv, atlas.faces, size)
    covered = tri_id >= 0
    if not covered.any():
        raise ValueError("the UV atlas covers no texel")
    f = atlas.faces[tri_id[covered]]  # (T, 3)
    w = bary[covered]  # (T, 3)
    tex = np.zeros((size, size, 3), dtype=np.float32)
    if color_fn is None:
        tex[covered] = np.einsum("tj,tjk->tk", w, np.asarray(vertex_colors)[atlas.source][f])
    else:
        points = np.einsum("tj,tjk->tk", w, atlas.vertices[f])  # (T, 3)
        normals = np.einsum("tj,tjk->tk", w, atlas.normals[f])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        tex[covered] = color_fn(points, normals)
    tex = dilate(tex, covered)
    return (np.clip(tex, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
