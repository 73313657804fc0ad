"""The colour the field shows at points of its surface, as sRGB in [0, 1].

Two ways, chosen by what the field's features are:

- :func:`local_colors` (pixel models: the rendered features ARE colours): at each point a short ray is
  marched straight in along the inward normal, from a few voxels outside to a few inside, and composited
  with the renderer's own rule (threestudio asks the field for its colour at the texel's surface point; the
  short ray does the same while averaging over the thin shell the renderer actually shows). Exact, and
  independent of which views see the point. The mesh export colours from the features averaged over the
  object's outer shell (:func:`smoothed_features`): the score leaves a surface's colour mottled a voxel or two
  wide, and the texture shows the average.
- :func:`projected_colors` (latent models: features are VAE latents and mean nothing pointwise): the field
  is rendered from several views, each rendering decoded at full resolution, every point projected into every
  view and the views where it is visible (its distance matches the rendered depth: a depth test) averaged,
  weighted by how squarely the view sees the surface.

Both return what the decoder returns: display (sRGB-encoded) values, as the diffusion model's images are.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from sjc_engine.cameras import Camera, spherical_camera
from sjc_engine.field import VoxelField
from sjc_engine.renderer import render_image
from sjc_engine.trilinear import trilinear_rays

Decode = Callable[[Tensor], Tensor]
COLOR_BLUR = 1.0  # the surface colours' smoothing, in voxels (bench/RESULTS.md, "Even colours")
SHELL_VOXELS = 2.0  # how deep under the surface the features that colour it are taken from


def pixel_decode(x: Tensor) -> Tensor:
    """Pixel-space features in [-1, 1] to RGB in [0, 1] (the first three channels)."""
    return ((x.clamp(-1, 1) + 1) / 2)[:, :3]


@torch.no_grad()
def smoothed_features(
    field: VoxelField, threshold: float, sigma: float = COLOR_BLUR, shell: float = SHELL_VOXELS
) -> Tensor:
    """The field's raw features (C, N, N, N) averaged over a Gaussian of ``sigma`` voxels, weighted by the activated
    density of the nodes outside the object or at most ``shell`` voxels inside its surface (activated density
    above ``threshold``): a normalised convolution over what the renders show. The untrained features of empty
    space weigh as little as its density, those deeper inside (no render reaches them) nothing. ``sigma`` 0: the
    features themselves."""
    feats = field.features.detach()
    if sigma <= 0:
        return feats
    from scipy import ndimage

    act = field.density_grid().detach().float().cpu().numpy()  # (N, N, N)
    depth = ndimage.distance_transform_edt(act > threshold)  # voxels to the nearest empty node, 0 outside
    weight = np.where(depth <= shell, act, 0.0).astype(np.float32)  # (N, N, N)
    total = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    f = feats.float().cpu().numpy()  # (C, N, N, N)
    sums = np.stack([ndimage.gaussian_filter(f[c] * weight, sigma, mode="nearest") for c in range(len(f))])
    out = np.where(total > 1e-6, sums / np.maximum(total, 1e-6), f)  # (C, N, N, N)
    return torch.from_numpy(out).to(device=feats.device, dtype=feats.dtype)


@torch.no_grad()
def local_colors(
    field: VoxelField,
    points: np.ndarray,
    normals: np.ndarray,
    decode: Decode = pixel_decode,
    outside_voxels: float = 2.0,
    inside_voxels: float = 4.0,
    step_ratio: float = 0.5,
    chunk: int = 131_072,
    features: Tensor | None = None,
) -> np.ndarray:
    """Colours (P, 3) in [0, 1] of surface ``points`` (P, 3) seen straight on along their ``normals`` (P, 3).

    Args:
        field: the voxel field (features must be pixel colours: ``decode`` is applied per point).
        points, normals: world positions and unit outward normals.
        decode: features (B, C, H, W) to RGB (B, 3, H, W) in [0, 1], pointwise.
        outside_voxels, inside_voxels: the ray runs from this many voxels outside to this many inside.
        step_ratio: march step as a fraction of the voxel size.
        chunk: points per batch (memory).
        features: raw features (C, N, N, N) to colour from instead of the field's own, e.g.
            :func:`smoothed_features` (default None: the field's).
    """
    dev = field.density.device
    n = field.grid_size
    feats = field.features.detach() if features is None else features
    grids = (field.density.detach().view(1, -1), feats.reshape(field.channels, -1))
    scale = (n - 1) / (2.0 * field.bbox)  # world -> voxel index units
    step = step_ratio * field.voxel_size
    k = max(2, int(np.ceil((outside_voxels + inside_voxels) / step_ratio)))
    out = np.empty((len(points), 3), dtype=np.float32)
    for s in range(0, len(points), chunk):
        p = torch.from_numpy(np.array(points[s : s + chunk], dtype=np.float32)).to(dev)  # (R, 3)
        d = -torch.from_numpy(np.array(normals[s : s + chunk], dtype=np.float32)).to(dev)  # (R, 3) inward
        start = ((p - d * outside_voxels * field.voxel_size + field.bbox) * scale).contiguous()
        delta = (d * step * scale).contiguous()
        counts = torch.full((len(p),), k, dtype=torch.long, device=dev)
        raw, feats = trilinear_rays(start, delta, counts, k, n, *grids)  # (1, R, k), (C, R, k)
        raw, feats = raw[0], field.activate_features(feats)
        alpha = 1.0 - torch.exp(-field.activate(raw) * step)  # (R, k)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], 1), 1)
        w = alpha * trans  # (R, k)
        wsum = w.sum(1)  # (R,)
        mid = feats[:, :, int(round(outside_voxels / step_ratio))]  # (C, R): the feature at the point itself
        feat = torch.where(wsum[None] > 1e-4, (feats * w[None]).sum(2) / wsum.clamp(min=1e-4)[None], mid)  # (C, R)
        rgb = decode(feat.T.reshape(1, -1, field.channels).permute(0, 2, 1)[..., None])  # (1, 3, R, 1)
        out[s : s + chunk] = rgb[0, :, :, 0].T.float().cpu().clamp(0, 1).numpy()
    return out


def color_views(n_views: int, size: int, radius: float, fov_deg: float) -> list[Camera]:
    """Cameras around the origin for colouring: azimuths evenly spaced, elevations alternating +30 / -15 deg."""
    return [
        spherical_camera(360.0 * i / n_views, 30.0 if i % 2 == 0 else -15.0, radius, fov_deg, size)
        for i in range(n_views)
    ]


@torch.no_grad()
def projected_colors(
    field: VoxelField,
    points: np.ndarray,
    normals: np.ndarray,
    decode: Decode,
    cameras: list[Camera],
    step_ratio: float = 0.5,
    depth_tol: float | None = None,
) -> np.ndarray:
    """Average decoded colours (P, 3) in [0, 1] of ``points`` over the ``cameras`` that see them.

    A point is visible in a view when its pixel is opaque (opacity > 0.5) and its distance from the camera is
    within ``depth_tol`` (default: 3 voxels + 0.02) of the rendered surface distance there. The background's
    share is taken out of each rendering first (features divided by opacity), so haze does not wash colours
    out. Points no view sees take the colour of the nearest point one does.
    """
    P = points.shape[0]
    tol = depth_tol if depth_tol is not None else 3 * field.voxel_size + 0.02
    pts = torch.from_numpy(np.array(points, dtype=np.float32))  # (P, 3)
    nrm = torch.from_numpy(np.array(normals, dtype=np.float32))  # (P, 3)
    acc = torch.zeros(P, 3)
    wsum = torch.zeros(P)
    for cam in cameras:
        out = render_image(field, cam, step_ratio, bg_depth=0.0)
        _, dirs = cam.rays(device=field.density.device, dtype=field.density.dtype)
        bg = field.background(dirs.reshape(-1, 3)).T.reshape_as(out.image)  # (C, H, W)
        op = out.opacity[None]  # (1, H, W)
        fg = (out.image - (1 - op) * bg) / op.clamp(min=1e-3)
        rgb = decode(fg[None])[0].float().cpu().clamp(0, 1)  # (3, H', W')
        opacity = out.opacity.cpu()  # (H, W)
        surf = out.depth.cpu() / opacity.clamp(min=1e-6)  # (H, W) expected distance of the surface
        c2w = cam.c2w.float()
        rel = pts - c2w[:3, 3]  # (P, 3)
        pc = rel @ c2w[:3, :3]  # (P, 3) camera coordinates (x right, y up, -z forward)
        z = -pc[:, 2]
        f = cam.focal
        px = f * pc[:, 0] / z.clamp(min=1e-6) + cam.width / 2  # continuous pixel coords, centres at +0.5
        py = -f * pc[:, 1] / z.clamp(min=1e-6) + cam.height / 2
        col, row = px.floor().long(), py.floor().long()
        inside = (z > 1e-6) & (col >= 0) & (col < cam.width) & (row >= 0) & (row < cam.height)
        col, row = col.clamp(0, cam.width - 1), row.clamp(0, cam.height - 1)
        dist = rel.norm(dim=-1)
        visible = inside & (opacity[row, col] > 0.5) & ((dist - surf[row, col]).abs() < tol)
        grid = torch.stack([px / cam.width * 2 - 1, py / cam.height * 2 - 1], -1).view(1, 1, P, 2)
        sample = torch.nn.functional.grid_sample(rgb[None], grid, align_corners=False, padding_mode="border")
        sample = sample.view(3, P).T  # (P, 3)
        facing = (-(rel / dist[:, None].clamp(min=1e-6)) * nrm).sum(-1).clamp(min=0.05)  # (P,)
        w = visible.float() * facing
        acc += w[:, None] * sample
        wsum += w
    seen = wsum > 0
    colors = torch.full((P, 3), 0.5)
    colors[seen] = acc[seen] / wsum[seen, None]
    if seen.any() and not seen.all():
        from scipy.spatial import cKDTree  # here: importing scipy.spatial takes 0.2 s, and the turntable and
        # previews (which import this module) never need it

        _, nearest = cKDTree(points[seen.numpy()]).query(points[~seen.numpy()])
        colors[~seen] = colors[seen][torch.from_numpy(np.asarray(nearest))]
    return colors.numpy()


def surface_colors(
    field: VoxelField,
    points: np.ndarray,
    normals: np.ndarray,
    decode: Decode | None,
    is_latent: bool,
    views: int = 12,
    view_size: int = 64,
    radius: float | None = None,
    fov_deg: float = 60.0,
    features: Tensor | None = None,
) -> np.ndarray:
    """sRGB colours (P, 3) in [0, 1] at surface points: :func:`local_colors` for pixel features (``features``:
    see there), :func:`projected_colors` (``views`` renderings of ``view_size`` pixels before decoding, at
    ``radius``, default ``2.2 * bbox``) for latent ones."""
    decode = decode or pixel_decode
    if not is_latent:
        return local_colors(field, points, normals, decode, features=features)
    cams = color_views(views, view_size, radius or 2.2 * field.bbox, fov_deg)
    return projected_colors(field, points, normals, decode, cams)
