"""Initial density of a fresh field: empty (the reference) or a soft blob at the centre to carve.

pals-ttic/sjc starts every voxel's raw density at zero, so the first hundreds of steps only grow density out of
empty space. DreamFusion and Magic3D add a "density blob" around the origin for the same reason; here it is only
the starting value (the optimiser may remove it anywhere): raw density ``peak * max(0, 1 - |x| / radius)``,
``peak`` at the centre falling linearly to zero at ``radius``. With the embedded model's ``density_shift`` of -5 its
default peak of 6 starts the centre at an activated density of about 1.3 (a semi-transparent ball), so a 200-step
run reaches solid objects instead of thin shells (bench/RESULTS.md, "Fewer, better-spent steps").

A blob that stays holds density where no view asks for it: the embedded model's tori kept a sheet across the
hole. ``SJCConfig.blob_decay`` takes it out again over the first part of the run (the loop subtracts an equal
part of :func:`blob_profile` after each step), so it only gives the shape its start.
"""

from __future__ import annotations

import torch

from sjc_engine.field import VoxelField


@torch.no_grad()
def blob_profile(field: VoxelField, radius: float) -> torch.Tensor:
    """``max(0, 1 - |x| / radius)`` at ``field``'s grid nodes, (1, N, N, N) like its density (1 at the origin)."""
    if radius <= 0:
        raise ValueError(f"blob radius must be > 0, got {radius}")
    r = field.grid_points().to(field.density.device).norm(dim=-1)  # (N, N, N)
    return (1.0 - r / radius).clamp(min=0.0).to(field.density.dtype)[None]


@torch.no_grad()
def add_density_blob(field: VoxelField, peak: float, radius: float) -> VoxelField:
    """Add ``peak * max(0, 1 - |x| / radius)`` to ``field``'s raw density (in place); returns the field.

    Args:
        field: the field (its grid nodes are at :meth:`VoxelField.grid_points`).
        peak: raw density added at the origin; 0 leaves the field as it is.
        radius: world distance from the origin at which the addition falls to zero (> 0).
    """
    profile = blob_profile(field, radius)  # checks the radius
    if peak != 0:
        field.density.add_(peak * profile)
    return field
