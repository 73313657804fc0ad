"""Quality measures of an SJC result against the analytic ground truth (used by the bench and the tests).

- :func:`yaw_iou`: 3D IoU of the field's occupancy with a shape, best over rotations about the vertical axis
  (the prior has no preferred azimuth, so the object may come out turned).
- :func:`torus_hole_open`: whether a torus's hole is open (no occupied node in a 5 x 5 column through the centre).
- :func:`field_scores`: the above for one SJC field and its prompt's shape, as the benches report them.
- :func:`object_color`: the mean decoded RGB of the object's pixels (opacity > 0.5) over a turntable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sjc_engine.cameras import turntable

from .shapes import SHAPES, occupancy, rotate_y


def iou(a: Tensor, b: Tensor) -> float:
    """Intersection over union of two boolean masks of one shape (0 when both are empty)."""
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / union if union else 0.0


@torch.no_grad()
def yaw_iou(occ: Tensor, points: Tensor, shape: str, n_yaw: int = 24) -> tuple[float, float]:
    """Best IoU of ``occ`` (N, N, N) with ``shape`` turned about +y, over ``n_yaw`` angles in [0, 360).

    Args:
        occ: the field's occupancy at its grid nodes.
        points: (N, N, N, 3) world coordinates of those nodes (``field.grid_points()``).
        shape: ground-truth shape name.
        n_yaw: rotations tried.

    Returns:
        (best IoU, its yaw in degrees).
    """
    occ = occ.bool().cpu()
    pts = points.cpu()
    best, best_deg = -1.0, 0.0
    for k in range(n_yaw):
        deg = 360.0 * k / n_yaw
        gt = occupancy(shape, rotate_y(pts, math.radians(deg)))
        v = iou(occ, gt)
        if v > best:
            best, best_deg = v, deg
    return best, best_deg


def torus_hole_open(occ: Tensor) -> bool:
    """Whether the vertical (y) column of 5 x 5 nodes through the centre of ``occ`` (N, N, N) ``[x, y, z]`` is
    empty: a torus lying flat, as the training renders show it, then has its hole open from top to bottom."""
    c = occ.shape[0] // 2
    return not bool(occ[c - 2 : c + 3, :, c - 2 : c + 3].any())


@torch.no_grad()
def field_scores(field: torch.nn.Module, shape: str, threshold: float) -> dict:
    """How a field at the density ``threshold`` (the mesh export's) fits ``shape``: ``iou`` and ``yaw_deg`` of its
    occupancy (:func:`yaw_iou`); ``solid_iou``, the same for the solid the mesh export takes
    (:func:`sjc_engine.export.mesh.solid_occupancy`: small pieces dropped, enclosed cavities filled, so a hollow
    shell counts as the volume its mesh encloses); ``best``, the shape its occupancy fits best; ``hole``, for a
    torus whether its hole is open (:func:`torus_hole_open`), else None; ``occupied``, its occupied nodes."""
    from sjc_engine.export.mesh import solid_occupancy

    occ, points = field.occupancy(threshold), field.grid_points()
    fits = {s: yaw_iou(occ, points, s) for s in SHAPES}  # name -> (IoU, yaw)
    solid = torch.from_numpy(solid_occupancy(field, threshold))
    return {
        "iou": fits[shape][0],
        "yaw_deg": fits[shape][1],
        "solid_iou": yaw_iou(solid, points, shape)[0],
        "best": max(fits, key=lambda s: fits[s][0]),
        "hole": torus_hole_open(occ) if shape == "torus" else None,
        "occupied": int(occ.sum()),
    }


@torch.no_grad()
def object_color(
    field: torch.nn.Module,
    decode: Callable[[Tensor], Tensor],
    radius: float,
    fov_deg: float,
    size: int = 32,
    n_views: int = 8,
    elevation_deg: float = 20.0,
    min_opacity: float = 0.5,
) -> tuple[tuple[float, float, float] | None, float]:
    """Mean RGB in [0, 1] of the pixels with opacity > ``min_opacity`` over ``n_views`` turntable views.

    Returns:
        (mean colour, or ``None`` when no pixel is opaque; the fraction of opaque pixels).
    """
    from sjc_engine.renderer import render_image

    total = torch.zeros(3)
    count = 0
    pixels = 0
    for cam in turntable(n_views, size, radius, elevation_deg, fov_deg):
        out = render_image(field, cam)
        rgb = decode(out.image[None].float())[0].cpu()  # (3, H', W')
        mask = out.opacity.cpu() > min_opacity  # (H, W)
        if rgb.shape[-2:] != mask.shape:
            mask = torch.nn.functional.interpolate(mask[None, None].float(), size=rgb.shape[-2:])[0, 0] > 0.5
        total += rgb[:, mask].sum(dim=1)
        count += int(mask.sum())
        pixels += mask.numel()
    if count == 0:
        return None, 0.0
    mean = total / count
    return (float(mean[0]), float(mean[1]), float(mean[2])), count / pixels
