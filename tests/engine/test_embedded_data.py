"""The embedded model's data and components: shapes, renders, captions, tokenizer (seconds on a CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from sjc_engine.cameras import spherical_camera, view_prompt
from training import shapes
from training.dataset import BACKGROUND, CAMERA, PALETTE, ProceduralDataset, nearest_color, render_shape, render_views
from training.model import build_tokenizer, default_meta, vocabulary_words


@pytest.mark.parametrize("name", sorted(shapes.SHAPES))
def test_occupancy_volume_matches_formula(name: str) -> None:
    pts = shapes.grid_points(128)  # (N, N, N, 3)
    occ = shapes.occupancy(name, pts)
    volume = occ.float().mean().item() * 8.0  # box [-1, 1]^3 has volume 8
    assert volume == pytest.approx(shapes.VOLUMES[name], rel=0.05)


@pytest.mark.parametrize("name", sorted(shapes.SHAPES))
def test_shapes_are_centred_and_bounded(name: str) -> None:
    pts = shapes.grid_points(64)
    occ = shapes.occupancy(name, pts)
    inside = pts[occ]  # (K, 3)
    assert inside.norm(dim=-1).max() < 0.56  # bounding radius ~0.52 (+ half a voxel)
    box_centre = (inside.min(0).values + inside.max(0).values) / 2
    assert box_centre.abs().max() < 0.05  # the bounding box is centred at the origin
    assert shapes.sdf(name, torch.zeros(1, 3)).item() < 0 or name == "torus"


def test_torus_lies_flat_with_a_hole() -> None:
    assert not shapes.occupancy("torus", torch.zeros(1, 3)).item()  # the hole at the centre
    assert shapes.occupancy("torus", torch.tensor([[shapes.TORUS_MAJOR, 0.0, 0.0]])).item()
    assert not shapes.occupancy("torus", torch.tensor([[0.0, shapes.TORUS_MAJOR, 0.0]])).item()


def test_sdf_is_a_distance() -> None:
    p = torch.tensor([[1.0, 0.0, 0.0]])
    assert shapes.sdf("sphere", p).item() == pytest.approx(1 - shapes.SPHERE_RADIUS, abs=1e-6)
    assert shapes.sdf("cube", p).item() == pytest.approx(1 - shapes.CUBE_HALF, abs=1e-6)
    apex = torch.tensor([[0.0, shapes.CONE_HALF_HEIGHT + 0.1, 0.0]])
    assert shapes.sdf("cone", apex).item() == pytest.approx(0.1, abs=1e-5)


def test_rotate_y_quarter_turn() -> None:
    p = torch.tensor([[1.0, 2.0, 0.0]])
    q = shapes.rotate_y(p, math.pi / 2)
    assert torch.allclose(q, torch.tensor([[0.0, 2.0, -1.0]]), atol=1e-6)


def test_render_front_view_of_sphere_is_centred_disc() -> None:
    cam = spherical_camera(0.0, 0.0, CAMERA.radius, 50.0, 16)
    sa, alpha = render_shape("sphere", [cam])
    assert sa.shape == alpha.shape == (1, 1, 16, 16)
    a = alpha[0, 0]
    assert a[8, 8] == 1.0 and a[0, 0] == 0.0
    expected = math.pi * (shapes.SPHERE_RADIUS / (CAMERA.radius * math.tan(math.radians(25)))) ** 2 / 4 * 256
    assert a.sum().item() == pytest.approx(expected, rel=0.15)
    assert torch.all(sa <= alpha + 1e-6)  # shade in [0, 1] times coverage


@pytest.mark.parametrize("name", sorted(shapes.SHAPES))
def test_objects_stay_inside_the_frame(name: str) -> None:
    vs = render_views(name, 24, seed=3, size=16)
    a = vs.alpha[:, 0]  # (V, S, S)
    border = torch.cat([a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]], dim=-1)
    assert border.max().item() == 0.0
    assert (a.sum(dim=(1, 2)) > 5).all()  # and visible


def test_dataset_is_deterministic_and_captioned() -> None:
    kw = dict(seed=7, views_per_shape=6, size=16, shapes=["cube", "torus"], colors=["red", "blue", "green"])
    d1, d2 = ProceduralDataset(**kw), ProceduralDataset(**kw)
    x1, c1 = d1.batch(12, torch.Generator().manual_seed(1))
    x2, c2 = d2.batch(12, torch.Generator().manual_seed(1))
    assert torch.equal(x1, x2) and c1 == c2
    x3, _ = d1.batch(12, torch.Generator().manual_seed(2))
    assert not torch.equal(x1, x3)
    assert x1.shape == (12, 3, 16, 16) and x1.min() >= -1 and x1.max() <= 1
    for cap in c1:
        words = cap.split()
        assert words[-2] in ("red", "blue", "green") and words[-1] in ("cube", "torus")
        assert cap.startswith("a ") or " view of a " in cap
    assert len(d1) == 2 * 3 * 6


def test_caption_equals_engine_view_prompt() -> None:
    d = ProceduralDataset(seed=1, views_per_shape=4, size=8, shapes=["cone"], colors=["pink"])
    vs = d.views["cone"]
    for v in range(4):
        cam = spherical_camera(float(vs.azimuth_deg[v]), float(vs.elevation_deg[v]), CAMERA.radius, 50.0, 8)
        assert d.caption("cone", "pink", v, bare=False) == view_prompt("a pink cone", cam)
    assert d.caption("cone", "pink", 0, bare=True) == "a pink cone"


def test_random_backgrounds_replace_the_grey_only_behind_the_object() -> None:
    kw = dict(seed=0, views_per_shape=4, size=16, shapes=["sphere"], color_jitter=0.0)
    grey = ProceduralDataset(**kw).batch(16, torch.Generator().manual_seed(3))[0]
    mixed = ProceduralDataset(**kw, random_background_prob=0.5).batch(16, torch.Generator().manual_seed(3))[0]
    corner = mixed[:, :, 0, 0]  # (B, 3): background only (the sphere stays well inside the frame)
    assert torch.allclose(grey[:, :, 0, 0], torch.tensor(BACKGROUND) * 2 - 1)
    is_grey = torch.isclose(corner, torch.tensor(BACKGROUND) * 2 - 1).all(dim=1)  # (B,)
    assert 0 < int(is_grey.sum()) < 16 and float(corner[~is_grey].std()) > 0.2  # some grey, the rest drawn colours
    centre = (slice(None), slice(None), slice(6, 10), slice(6, 10))  # opaque sphere pixels
    drawn = ProceduralDataset(**kw, random_background_prob=1.0)
    a = drawn.batch(16, torch.Generator().manual_seed(3))[0]
    b = ProceduralDataset(**kw).batch(16, torch.Generator().manual_seed(3))[0]
    assert torch.allclose(a[centre], b[centre], atol=1e-6)  # same shapes, colours and views: only the background moved
    with pytest.raises(ValueError, match="random_background_prob"):
        ProceduralDataset(**kw, random_background_prob=1.5)


def test_colours_are_distinct_and_recoverable() -> None:
    d = ProceduralDataset(seed=0, views_per_shape=4, size=16, shapes=["sphere"])
    refs = d.reference_colors()
    assert len(PALETTE) >= 8
    for name, rgb in refs.items():
        assert nearest_color(rgb, refs) == name


def test_tokenizer_round_trip(tmp_path) -> None:
    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "overhead view of a purple cylinder"
    ids = loaded(text, padding="max_length", max_length=loaded.model_max_length).input_ids
    assert len(ids) == 16 and ids[0] == loaded.bos_token_id
    assert loaded.decode(ids, skip_special_tokens=True) == text
    assert ids == tok(text, padding="max_length", max_length=16).input_ids
    empty = loaded("").input_ids
    assert empty == [loaded.bos_token_id, loaded.eos_token_id]
    assert loaded("a mauve cube").input_ids[2] == loaded.unk_token_id
    assert loaded("A Red CUBE").input_ids == loaded("a red cube").input_ids


def test_vocabulary_and_meta_cover_the_captions() -> None:
    words = set(vocabulary_words())
    for w in ["front", "side", "backside", "overhead", "view", "of", "a", *PALETTE, *shapes.SHAPES]:
        assert w in words
    meta = default_meta()
    assert meta["kind"] == "pixel"
    assert meta["vocabulary"]["colors"] == list(PALETTE)
    assert meta["defaults"]["cam_radius"] == CAMERA.radius
    assert tuple(meta["defaults"]["elev_range_deg"]) == CAMERA.elev_range_deg
    assert np.isfinite(meta["defaults"]["guidance_scale"])
