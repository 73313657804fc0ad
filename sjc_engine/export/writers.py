"""Mesh files: a textured GLB with a PBR material, OBJ + MTL + PNG, PLY with vertex colours, STL.

Colour spaces: the texture PNG holds sRGB-encoded values (glTF's ``baseColorTexture`` is sRGB by definition,
and MTL ``map_Kd`` images are read as display colours). The PLY's ``red``/``green``/``blue`` are uint8 sRGB
values too (PLY defines no colour space; viewers such as MeshLab and Blender show them as display colours).
The GLB carries no ``COLOR_0`` (glTF defines vertex colours as linear; the texture holds the colour).

The material is diffuse: ``metallicFactor`` 0 and ``roughnessFactor`` :data:`ROUGHNESS` (glTF's default
material, metallic 1 and roughness 1, shows colours as dark tinted metal), single-sided (the mesh is closed
and faces outward).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from sjc_engine.export.texture import Atlas

ROUGHNESS = 0.85
TEXTURE_NAME = "mesh.png"


def textured_mesh(atlas: Atlas, texture: np.ndarray) -> trimesh.Trimesh:
    """The atlas mesh with its base-colour ``texture`` (H, W, 3) uint8 in a diffuse PBR material."""
    material = trimesh.visual.material.PBRMaterial(
        name="mesh",
        baseColorTexture=_png_once(Image.fromarray(texture)),
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=ROUGHNESS,
        doubleSided=False,
    )
    visual = trimesh.visual.TextureVisuals(uv=atlas.uv, material=material)
    return trimesh.Trimesh(
        vertices=atlas.vertices, faces=atlas.faces, vertex_normals=atlas.normals, visual=visual, process=False
    )


def _png_once(image: Image.Image) -> Image.Image:
    """``image`` whose PNG encoding is done once: trimesh's GLB and OBJ writers each save the texture as a PNG
    (``image.save(f, format="png")``); the second save writes the first one's bytes (the same bytes: the
    same image, the same encoder settings). Any other save goes to PIL as usual."""
    save = image.save
    encoded: list[bytes] = []

    def save_once(fp, format=None, **params):  # noqa: A002 (PIL's name)
        if str(format).lower() != "png" or params or not hasattr(fp, "write"):
            return save(fp, format=format, **params)
        if not encoded:
            buf = io.BytesIO()
            save(buf, format="png")
            encoded.append(buf.getvalue())
        fp.write(encoded[0])

    image.save = save_once  # an instance attribute: this image only
    return image


ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


def _set_buffer_view_targets(tree: dict) -> None:
    """Mark vertex-attribute and index buffer views with their ``target`` (the validator hints otherwise)."""
    views = tree.get("bufferViews", [])
    accessors = tree.get("accessors", [])
    for mesh in tree.get("meshes", []):
        for prim in mesh.get("primitives", []):
            for acc in prim.get("attributes", {}).values():
                views[accessors[acc]["bufferView"]]["target"] = ARRAY_BUFFER
            if "indices" in prim:
                views[accessors[prim["indices"]]["bufferView"]]["target"] = ELEMENT_ARRAY_BUFFER


def write_glb(mesh: trimesh.Trimesh, path: Path) -> Path:
    """A binary glTF with POSITION, NORMAL, TEXCOORD_0, indices and the PBR material, texture embedded as PNG."""
    data = trimesh.exchange.gltf.export_glb(mesh, include_normals=True, tree_postprocessor=_set_buffer_view_targets)
    path.write_bytes(data)
    return path


def write_obj(mesh: trimesh.Trimesh, path: Path) -> list[Path]:
    """``path`` (OBJ with ``vt`` and ``vn``), ``<stem>.mtl`` and its texture ``<stem>.png`` beside it."""
    mtl_name = path.with_suffix(".mtl").name
    tex_name = path.with_suffix(".png").name
    text, files = trimesh.exchange.obj.export_obj(
        mesh, include_normals=True, include_color=False, include_texture=True, return_texture=True, mtl_name=mtl_name
    )
    written = [path]
    path.write_text(text)
    for name, data in files.items():
        if name == mtl_name:
            mtl = data.decode("utf-8")
            for other in files:
                if other != mtl_name:
                    mtl = mtl.replace(other, tex_name)
            (path.parent / mtl_name).write_text(mtl)
            written.append(path.parent / mtl_name)
        else:
            (path.parent / tex_name).write_bytes(data)
            written.append(path.parent / tex_name)
    return written


def write_ply(mesh: trimesh.Trimesh, colors: np.ndarray, path: Path) -> Path:
    """Binary PLY with vertex normals and uint8 sRGB vertex colours (``colors`` (V, 3) in [0, 1])."""
    rgba = np.concatenate([colors, np.ones_like(colors[:, :1])], axis=1)
    colored = trimesh.Trimesh(
        vertices=mesh.vertices, faces=mesh.faces, vertex_normals=mesh.vertex_normals,
        vertex_colors=(np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8), process=False,
    )
    path.write_bytes(trimesh.exchange.ply.export_ply(colored, encoding="binary", vertex_normal=True))
    return path


def write_stl(mesh: trimesh.Trimesh, path: Path) -> Path:
    """Binary STL (geometry only)."""
    path.write_bytes(trimesh.exchange.stl.export_stl(mesh))
    return path
