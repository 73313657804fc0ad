"""Taking a model's training light out of the mesh's colours (sjc_engine/export/delight.py): the fit, the gain,
the exported asset (vertex colours and texture alike), the model metadata that turns it on."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from sjc_engine.catalog import EMBEDDED_DIR, resolve_model
from sjc_engine.config import SJCConfig
from sjc_engine.denoisers.errors import ModelLoadError
from sjc_engine.export.asset import export_asset
from sjc_engine.export.delight import MAX_GAIN, Shading, fit_shading, remove_shading, unit_direction
from sjc_engine.field import VoxelField

LIGHT = (0.35, 1.0, 0.45)
ALBEDO = np.array([0.9, 0.45, 0.1])


def sphere_normals(n: int = 4000, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def shaded(normals: np.ndarray, ambient: float = 0.4, diffuse: float = 0.6) -> np.ndarray:
    lit = np.clip(normals @ unit_direction(LIGHT), 0, None)
    return ALBEDO[None] * (ambient + diffuse * lit)[:, None]


def test_fit_recovers_the_shading_and_removal_gives_the_albedo() -> None:
    n = sphere_normals()
    noise = np.random.default_rng(1).normal(scale=0.01, size=(len(n), 3))
    s = fit_shading(shaded(n) + noise, n, LIGHT)
    brightness = ALBEDO.mean()
    assert s.ambient == pytest.approx(0.4 * brightness, abs=0.01)
    assert s.diffuse == pytest.approx(0.6 * brightness, abs=0.01)
    out = remove_shading(shaded(n), n, s)
    assert np.abs(out - ALBEDO[None]).max() < 0.03  # every side the colour the lit side shows
    assert out.std(0).max() < 0.01


def test_nothing_to_take_out_leaves_colours_alone() -> None:
    n = sphere_normals()
    flat = np.tile(ALBEDO, (len(n), 1))
    assert fit_shading(flat, n, LIGHT).diffuse == pytest.approx(0, abs=1e-9)
    np.testing.assert_allclose(remove_shading(flat, n, fit_shading(flat, n, LIGHT)), flat, atol=1e-6)
    # brighter away from the light (not this light's shading): left alone
    lit = np.clip(n @ unit_direction(LIGHT), 0, None)
    away = ALBEDO[None] * (1.0 - 0.5 * lit)[:, None]
    s = fit_shading(away, n, LIGHT)
    assert s.diffuse == 0
    np.testing.assert_allclose(remove_shading(away, n, s), away, atol=1e-6)


def test_gain_is_capped_and_colours_stay_in_range() -> None:
    n = sphere_normals()
    s = fit_shading(shaded(n, ambient=0.0, diffuse=1.0), n, LIGHT)  # unlit sides black: an unbounded gain
    g = s.gain(n)
    assert g.max() == pytest.approx(MAX_GAIN, rel=1e-5)
    assert g.min() == pytest.approx(1.0, abs=0.02)
    # brightening stops where a channel reaches 1: the hue stays (a purple does not turn magenta)
    purple = np.tile([0.39, 0.11, 0.53], (len(n), 1))
    out = remove_shading(purple, n, Shading(unit_direction(LIGHT), 0.1, 0.9))
    assert out.max() <= 1.0 + 1e-6 and out.max(1).min() >= 0.53
    np.testing.assert_allclose(out / out[:, 2:3], purple / purple[:, 2:3], rtol=1e-5)
    assert np.isclose(out[:, 2], 1.0).mean() > 0.3  # the unlit side went as far as it could


def test_direction_and_shape_errors() -> None:
    with pytest.raises(ValueError, match="light direction"):
        unit_direction((0, 0, 0))
    with pytest.raises(ValueError, match="light direction"):
        unit_direction((1.0, float("nan"), 0))
    with pytest.raises(ValueError, match="must match"):
        fit_shading(np.zeros((3, 3)), np.zeros((4, 3)), LIGHT)


def baked_ball(n: int = 32) -> VoxelField:
    """An orange ball of radius 0.5 whose colours carry the training light's shading, as the embedded model's
    fields do (pixel features in [-1, 1])."""
    field = VoxelField(grid_size=n, channels=3)
    with torch.no_grad():
        p = field.grid_points()  # (n, n, n, 3)
        r = p.norm(dim=-1, keepdim=True)
        field.density.copy_(torch.where(r[..., 0] < 0.5, 60.0, -30.0)[None])
        normal = p / r.clamp(min=1e-6)  # (n, n, n, 3): the sphere's outward normal at each node's direction
        lit = (normal @ torch.tensor(unit_direction(LIGHT), dtype=torch.float32)).clamp(min=0)  # (n, n, n)
        rgb = torch.tensor(ALBEDO, dtype=torch.float32)[:, None, None, None] * (0.4 + 0.6 * lit)[None]
        field.features.copy_(rgb * 2 - 1)  # (3, n, n, n)
        field.bg.fill_(1.0)
    return field


def brightness_spread(colors: np.ndarray) -> float:
    b = colors[:, :3].mean(1)
    return float(b.std() / b.mean())


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    field = baked_ball()
    config = SJCConfig(prompt="x", display_size=64, video_frames=2, target_faces=3000, texture_size=256)
    out = {}
    for name, light in (("as_is", None), ("delit", LIGHT)):
        d = tmp_path_factory.mktemp(name)
        export_asset(field, config, d, outputs=("mesh", "previews"), mesh_formats=("glb", "ply"), baked_light=light)
        out[name] = d
    return out


def test_mesh_colours_lose_the_training_light(exports) -> None:
    before = trimesh.load(exports["as_is"] / "mesh.ply", process=False)
    after = trimesh.load(exports["delit"] / "mesh.ply", process=False)
    np.testing.assert_array_equal(before.vertices, after.vertices)
    c0 = before.visual.vertex_colors[:, :3] / 255.0
    c1 = after.visual.vertex_colors[:, :3] / 255.0
    assert brightness_spread(c0) > 0.2  # the unlit side at 0.4 of the lit one
    assert brightness_spread(c1) < 0.06
    assert np.abs(np.median(c1, 0) - ALBEDO).max() < 0.06  # the albedo the shading was laid on
    # the texture the GLB's viewers show, sampled at the vertices, is the same de-lit colour
    for name, spread in (("as_is", (0.2, 1.0)), ("delit", (0.0, 0.06))):
        glb = trimesh.load(exports[name] / "mesh.glb", force="mesh")
        tex = np.asarray(glb.visual.to_color().vertex_colors)[:, :3] / 255.0
        assert spread[0] < brightness_spread(tex) < spread[1], name
    # the thumbnail is a render of the field: it keeps its light either way
    assert (exports["as_is"] / "thumbnail.png").read_bytes() == (exports["delit"] / "thumbnail.png").read_bytes()


def test_the_embedded_model_declares_the_training_light() -> None:
    from training.dataset import LIGHT_DIR

    info = resolve_model("embedded")
    np.testing.assert_allclose(info.baked_light, unit_direction(LIGHT_DIR))
    assert json.loads((EMBEDDED_DIR / "sjc_model.json").read_text())["baked_light"]["direction"] == list(LIGHT_DIR)


@pytest.mark.parametrize("value", [{"direction": [0, 0, 0]}, {"direction": [1, 2]}, [0.3, 1, 0.4],
                                   {"direction": ["up", 1, 0]}])
def test_a_bad_baked_light_names_the_file(tmp_path, value) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "sjc_model.json").write_text(json.dumps({"kind": "pixel", "baked_light": value}))
    with pytest.raises(ModelLoadError, match="baked_light") as e:
        resolve_model(str(model))
    assert "sjc_model.json" in str(e.value)
