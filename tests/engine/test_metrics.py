"""The bench's field scores (training/metrics.py) on fields made from the analytic shapes themselves."""

from __future__ import annotations

import torch

from sjc_engine.field import VoxelField
from training.metrics import field_scores
from training.shapes import sdf

THRESHOLD = 5.0


def _field_of(inside: torch.Tensor) -> VoxelField:
    """A 40^3 field whose activated density is far above THRESHOLD where ``inside`` (N, N, N), far below elsewhere."""
    f = VoxelField(40, 3, density_shift=0.0)
    with torch.no_grad():
        f.density[0] = torch.where(inside, 50.0, -50.0)
    return f


def test_a_torus_field_scores_as_an_open_torus() -> None:
    f = _field_of(sdf("torus", VoxelField(40, 3).grid_points().reshape(-1, 3)).reshape(40, 40, 40) < 0)
    fit = field_scores(f, "torus", THRESHOLD)
    assert fit["best"] == "torus" and fit["hole"] is True
    assert fit["iou"] > 0.9 and fit["solid_iou"] > 0.9  # nothing enclosed to fill
    filled = _field_of(f.occupancy(THRESHOLD) | (f.grid_points()[..., [0, 2]].norm(dim=-1) < 0.3)
                       & (f.grid_points()[..., 1].abs() < 0.05))  # a sheet across the hole
    assert field_scores(filled, "torus", THRESHOLD)["hole"] is False


def test_a_hollow_shell_counts_as_its_solid() -> None:
    d = sdf("cube", VoxelField(40, 3).grid_points().reshape(-1, 3)).reshape(40, 40, 40)
    fit = field_scores(_field_of((d < 0) & (d > -0.1)), "cube", THRESHOLD)  # walls 0.1 thick, hollow inside
    assert fit["best"] == "cube" and fit["hole"] is None
    assert fit["iou"] < 0.75 and fit["solid_iou"] == 1.0  # the mesh export fills the cavity; the field does not
