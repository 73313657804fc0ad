"""The shipped embedded model tells shapes apart in 3D: a short CPU SJC run per prompt, fixed seeds.

"a red cube" must overlap the ground-truth cube better than the ground-truth torus, and "a blue torus" the
reverse (IoU of the solid the mesh export takes at the mesh threshold, best over yaw); "a red torus" must come
out with its hole open. Each run uses the model's default settings (what ``sjc generate`` runs) and stays well
under a minute on two CPU cores. Skipped when the model has not been trained into the package yet.
"""

from __future__ import annotations

import pytest
import torch

from sjc_engine.catalog import EMBEDDED_DIR, META_FILE

pytestmark = pytest.mark.skipif(not (EMBEDDED_DIR / META_FILE).is_file(), reason="embedded model not shipped yet")

SEED = 0


@pytest.fixture(scope="module")
def denoiser():
    from sjc_engine.denoisers.loader import load_denoiser

    return load_denoiser("embedded", device="cpu", half=False)


def _run(prompt: str, denoiser) -> tuple[dict[str, float], bool]:
    """IoU of the run's solid with the cube and the torus, and whether a torus hole is open in its occupancy."""
    from sjc_engine.export.mesh import solid_occupancy
    from sjc_engine.optimize import run_sjc
    from sjc_engine.pipeline import build_config
    from training.metrics import torus_hole_open, yaw_iou

    torch.set_num_threads(2)
    config = build_config(
        prompt, "embedded", device="cpu", seed=SEED, preview_every=0, checkpoint_every=0
    )
    field = run_sjc(config, denoiser).field
    occ = field.occupancy(config.mesh_threshold)
    assert occ.any(), f"{prompt!r}: the field came out empty"
    solid = torch.from_numpy(solid_occupancy(field, config.mesh_threshold))
    return {s: yaw_iou(solid, field.grid_points(), s, n_yaw=12)[0] for s in ("cube", "torus")}, torus_hole_open(occ)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cube_prompt_makes_a_cube_not_a_torus(denoiser) -> None:
    ious, _ = _run("a red cube", denoiser)
    assert ious["cube"] > ious["torus"], ious
    assert ious["cube"] > 0.4, ious  # 0.51 with the shipped model and its defaults


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_torus_prompt_makes_a_torus_not_a_cube(denoiser) -> None:
    ious, _ = _run("a blue torus", denoiser)
    assert ious["torus"] > ious["cube"], ious
    assert ious["torus"] > 0.3, ious  # 0.83 with the shipped model and its defaults


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_red_torus_comes_out_with_its_hole_open(denoiser) -> None:
    ious, hole = _run("a red torus", denoiser)
    assert hole, ious  # closed by a sheet while the blob stayed (bench/RESULTS.md)
    assert ious["torus"] > ious["cube"], ious  # 0.63 against 0.29 with the shipped model and its defaults
