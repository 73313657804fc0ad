"""The finished asset: every file a run's user takes home, written from the fitted field in one call.

:func:`export_asset` writes, in order:

1. ``turntable.mp4``: a full turn at display size (``config.display_size`` pixels high: the field renders at
   any resolution; it is rendered at most at ~2 pixels per voxel, the detail it holds, and scaled up from
   there), RGB beside colourised depth (``"video"`` output);
2. ``thumbnail.png``: the poster, one three-quarter view at display size (with the ``"video"`` or the
   ``"previews"`` output);
3. the mesh (``"mesh"`` output): ``mesh.glb`` (UV-mapped, diffuse PBR material, baked base-colour
   texture), ``mesh.obj`` + ``mesh.mtl`` + ``mesh.png``, ``mesh.ply`` (sRGB vertex colours), ``mesh.stl``,
   as ``mesh_formats`` chooses. A field with no surface at ``config.mesh_threshold`` skips the mesh with a
   warning; the other files are still written.

A pixel field's renders and mesh show the same colours: its features averaged over the object's outer shell
(:func:`~sjc_engine.export.colors.smoothed_features`), not the voxel-wide mottle the score leaves on them (the
checkpoint keeps the features as optimised). The turntable renders on the calling thread, each frame encoded as
soon as it is rendered; the mesh, then the thumbnail, are made meanwhile on one second thread (the files are the
same as made one after the other).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from sjc_engine.cameras import spherical_camera
from sjc_engine.config import SJCConfig
from sjc_engine.export.colors import pixel_decode, local_colors, projected_colors, color_views, smoothed_features
from sjc_engine.export.crop import crop_to_content
from sjc_engine.export.delight import delit
from sjc_engine.export.formats import MESH_FORMATS
from sjc_engine.field import VoxelField

Decode = Callable[[Tensor], Tensor]
TURNTABLE_ELEVATION_DEG = 20.0
THUMBNAIL_AZIMUTH_DEG, THUMBNAIL_ELEVATION_DEG = 45.0, 25.0
COLOR_VIEWS = 12


@dataclass
class ExportResult:
    """What :func:`export_asset` wrote: ``files`` (name relative to the folder -> path) and ``warnings``."""

    files: dict[str, Path] = dc_field(default_factory=dict)
    warnings: list[str] = dc_field(default_factory=list)


@torch.no_grad()
def decode_scale(field: VoxelField, decode: Decode) -> int:
    """Decoded pixels per rendered pixel (1 for pixel models, 8 for Stable Diffusion's VAE)."""
    probe = torch.zeros(1, field.channels, 8, 8, device=field.density.device)
    return max(1, int(decode(probe).shape[-1]) // 8)


def render_size_for(display_size: int, scale: int, minimum: int = 8) -> int:
    """The render side whose decoded image is at least ``display_size`` pixels."""
    return max(minimum, -(-display_size // scale))


def resolved_size(field: VoxelField, radius: float, fov_deg: float, px_per_voxel: float = 2.0) -> int:
    """The render side beyond which the field shows no more detail: ``px_per_voxel`` pixels per voxel at the
    distance of the origin (a trilinear field is smooth between its nodes; rendering finer only interpolates)."""
    frame = 2.0 * radius * math.tan(math.radians(fov_deg) / 2)  # world width seen at the origin
    return int(math.ceil(px_per_voxel * frame / field.voxel_size))


@torch.no_grad()
def write_thumbnail(
    field: VoxelField, decode: Decode, config: SJCConfig, size: int, path: Path, out_height: int | None = None
) -> Path:
    """The poster: a three-quarter view (azimuth 45, elevation 25 degrees) rendered at ``size`` before decoding,
    scaled up to ``out_height`` if it is lower."""
    from sjc_engine.export.images import save_png, to_uint8_image
    from sjc_engine.export.video import upscale
    from sjc_engine.renderer import render_image

    cam = spherical_camera(THUMBNAIL_AZIMUTH_DEG, THUMBNAIL_ELEVATION_DEG, config.cam_radius, config.test_fov_deg, size)
    img = render_image(field, cam, config.step_ratio).image[None]  # (1, C, H, W)
    return save_png(upscale(to_uint8_image(decode(img).float()[0]), out_height), path)


def export_asset(
    field: VoxelField,
    config: SJCConfig,
    out_dir: Path,
    decode: Decode | None = None,
    is_latent: bool = False,
    outputs: Collection[str] = ("video", "mesh", "previews"),
    mesh_formats: Collection[str] = MESH_FORMATS,
    baked_light: tuple[float, float, float] | None = None,
) -> ExportResult:
    """Write the turntable, the thumbnail and the mesh files of a fitted ``field`` into ``out_dir``.

    Args:
        field: the fitted voxel field.
        config: the run's settings (``display_size``, ``video_frames``, ``mesh_threshold``, ``target_faces``,
            ``texture_size``, the camera settings).
        out_dir: the folder (created).
        decode: the denoiser's ``decode`` (features to RGB in [0, 1]); ``None``: pixel features in [-1, 1].
        is_latent: the features are VAE latents (mesh colours then come from decoded, depth-tested views).
        outputs: which of ``"video"``, ``"mesh"``, ``"previews"`` were asked for (others are ignored here).
        mesh_formats: which of :data:`MESH_FORMATS`.
        baked_light: direction towards the light the model's training images were shaded by (the denoiser's
            ``baked_light``): the mesh's colours have that shading taken out (:mod:`sjc_engine.export.delight`),
            the renders keep it. Default None: the mesh's colours as the field shows them.
    """
    decode = decode or pixel_decode
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult()
    # render at display size, or at the field's own resolution when that is lower (then scale up): a 64^3
    # field has nothing to show beyond ~2 pixels per voxel, and a 256 px render costs 4x a 128 px one
    scale = decode_scale(field, decode)
    fine = min(render_size_for(config.display_size, scale), resolved_size(field, config.cam_radius, config.test_fov_deg))
    size = max(config.render_size, fine)

    # the mesh (3.) and the poster (2.) on a second thread while the turntable (1.) renders on this one: they
    # share no data but the field, which nobody changes; the mesh steps are mostly single-threaded (marching
    # cubes, xatlas, texture baking, file writing), and the renderer's native pass and the video encoder
    # release the GIL, so the two cores stay busy
    want_mesh = "mesh" in outputs and bool(mesh_formats)
    want_poster = bool({"video", "previews"} & set(outputs))
    mesh_job = poster_job = None
    # a pixel field's colours, for the mesh and the renders alike: its features averaged over its outer shell
    features = smoothed_features(field, config.mesh_threshold) if (want_mesh or want_poster) and not is_latent else None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sjc-export") if want_mesh or want_poster else None
    try:
        if want_mesh:
            mesh_job = pool.submit(_export_mesh, field, config, out_dir, decode, features, size, tuple(mesh_formats),
                                   baked_light)
        if want_poster or "video" in outputs:
            # the renders without marching through empty space: cropped to the object (half the mesh threshold,
            # 3 voxels around it), faint haze and specks far from the object left out, with the mesh's colours
            view = crop_to_content(field, min_density=0.5 * config.mesh_threshold, margin=3, features=features)
        if want_poster:
            poster_job = pool.submit(
                write_thumbnail, view, decode, config, size, out_dir / "thumbnail.png", out_height=config.display_size
            )

        # 1. turntable at display size, each frame encoded as soon as it is rendered
        if "video" in outputs:
            from sjc_engine.export.video import Mp4Writer, iter_turntable

            with Mp4Writer(out_dir / "turntable.mp4") as writer:
                for frame in iter_turntable(
                    view, decode, n_frames=config.video_frames, size=size, radius=config.cam_radius,
                    fov_deg=config.test_fov_deg, elevation_deg=TURNTABLE_ELEVATION_DEG, step_ratio=config.step_ratio,
                    out_height=config.display_size,
                ):
                    writer.write(frame)
            result.files["turntable.mp4"] = writer.path
    finally:
        if pool is not None:
            pool.shutdown(wait=True)

    # 2. the poster
    if poster_job is not None:
        result.files["thumbnail.png"] = poster_job.result()
    # 3. the mesh: surface, colours, texture, files
    if mesh_job is not None:
        paths, warning = mesh_job.result()
        if warning:
            result.warnings.append(warning)
        result.files.update(paths)
    return result


@torch.no_grad()
def _export_mesh(
    field: VoxelField, config: SJCConfig, out_dir: Path, decode: Decode, features: Tensor | None, size: int,
    mesh_formats: tuple[str, ...], baked_light: tuple[float, float, float] | None = None,
) -> tuple[dict[str, Path], str | None]:
    """Step 3 of :func:`export_asset`: surface, colours, texture, files; ``(files, None)``, or ``({}, warning)``
    for a field with no surface. ``features``: a pixel field's smoothed features (vertex and texture colours come
    from them), None for a latent field (colours from decoded views). ``baked_light``: see :func:`export_asset`."""
    from sjc_engine.export.mesh import EmptyMeshError, extract_mesh, save_mesh

    is_latent = features is None
    try:
        mesh = extract_mesh(
            field, config.mesh_threshold, decode, is_latent, target_faces=config.target_faces, size=size,
            views=COLOR_VIEWS, features=features, baked_light=baked_light,
        )
    except EmptyMeshError as e:  # an empty (or full) field: keep the other results, say why
        return {}, f"mesh skipped: {e}"
    if is_latent:
        cams = color_views(COLOR_VIEWS, size, 2.2 * field.bbox, config.test_fov_deg)
        color_fn = lambda p, n: projected_colors(field, p, n, decode, cams)  # noqa: E731
    else:
        color_fn = lambda p, n: local_colors(field, p, n, decode, features=features)  # noqa: E731
        if "shading" in mesh.metadata:  # the texels lose the training light as the vertex colours did
            color_fn = delit(color_fn, mesh.metadata["shading"])
    return save_mesh(mesh, out_dir, formats=mesh_formats, color_fn=color_fn, texture_size=config.texture_size), None
