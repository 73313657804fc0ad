"""A field cropped to its content, for fast display renders.

The renderer marches every ray through the whole box, so at display size (256 px and more) most of the
time goes to empty space. :func:`crop_to_content` cuts the grids down to the smallest centred box that holds
every node denser than ``min_density`` in the object's large connected pieces (plus a margin; stray specks
do not count): the nodes keep their exact positions (the crop is
symmetric, so ``x_i = -bbox + 2 bbox i / (N - 1)`` still holds with the smaller ``bbox`` and ``N``), the
background is shared, and rays that miss the smaller box see the background directly. What is cut is only
faint haze outside the object.

The copy may take other features than the field's (``features``): the exporter gives its display renders (the
turntable, the thumbnail) the colours its mesh is coloured with, the features averaged over the object's outer
shell (:func:`sjc_engine.export.colors.smoothed_features`), so the renders show the mesh's even colours rather
than the voxel-wide mottle the score leaves (bench/RESULTS.md, "Even colours in the renders").
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from sjc_engine.field import VoxelField


@torch.no_grad()
def crop_to_content(
    field: VoxelField, min_density: float = 1.0, margin: int = 2, keep_ratio: float = 0.05,
    features: torch.Tensor | None = None,
) -> VoxelField:
    """A copy of ``field`` cropped to the centred box holding its nodes with density > ``min_density``.

    Args:
        field: the voxel field.
        min_density: activated density that counts as content (default 1.0: ~3% opacity per voxel at 64^3).
        margin: nodes kept beyond the outermost content node on each side (default 2).
        keep_ratio: 26-connected pieces of content with fewer nodes than this fraction of the largest piece's
            are specks, not content (default 0.05).
        features: raw features (C, N, N, N) for the copy instead of the field's (default None: the field's).

    Returns:
        a new field (same device) with ``grid_size`` ``N - 2c`` and ``bbox`` ``bbox (N - 1 - 2c) / (N - 1)``;
        when nothing can be cut (no content, or content reaching the box border), ``field`` itself, or an
        uncropped copy with ``features``.
    """
    n = field.grid_size
    if features is not None and features.shape != field.features.shape:
        raise ValueError(f"features must have the field's shape {tuple(field.features.shape)}, "
                         f"got {tuple(features.shape)}")
    occ = (field.density_grid() > min_density).cpu().numpy()  # (N, N, N)
    if not occ.any():
        return field if features is None else _copy(field, 0, features)
    labels, count = ndimage.label(occ, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]  # (count,)
    occ = np.isin(labels, np.flatnonzero(sizes >= keep_ratio * sizes.max()) + 1)
    idx = torch.from_numpy(np.argwhere(occ))  # (P, 3)
    reach = int(torch.maximum(idx.max(0).values, (n - 1) - idx.min(0).values).max())  # farthest from index 0 side
    lo = max(0, (n - 1) - reach - margin)  # nodes [lo, n - 1 - lo] keep every content node
    if lo == 0 or n - 2 * lo < 4:
        return field if features is None else _copy(field, 0, features)
    return _copy(field, lo, field.features if features is None else features)


def _copy(field: VoxelField, lo: int, features: torch.Tensor) -> VoxelField:
    """``field`` without its outer ``lo`` layers of nodes on each side, with ``features`` (C, N, N, N)."""
    n = field.grid_size
    m = n - 2 * lo
    out = VoxelField(
        m, field.channels, bbox=field.bbox * (m - 1) / (n - 1), density_shift=field.density_shift,
        bg_res=field.bg_res, feature_activation=field.feature_activation,
    ).to(field.density.device)
    sl = slice(lo, n - lo)
    out.density.copy_(field.density[:, sl, sl, sl])
    out.features.copy_(features[:, sl, sl, sl])
    out.d_scale.copy_(field.d_scale)
    out.bg.copy_(field.bg)
    return out
