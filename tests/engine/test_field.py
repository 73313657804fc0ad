"""VoxelField: initialisation, activation, background, save/load (lookups: test_trilinear.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sjc_engine.field import VoxelField


def test_init_matches_reference() -> None:
    torch.manual_seed(0)
    f = VoxelField(grid_size=10, channels=4)
    assert f.density.shape == (1, 10, 10, 10) and torch.all(f.density == 0)
    assert f.features.shape == (4, 10, 10, 10)
    assert 0.8 < f.features.std().item() < 1.2  # randn
    assert f.bg.shape == (4, 4, 4)
    assert f.d_scale.item() == 0.0
    # density = softplus(0 * exp(0) - 1)
    assert torch.allclose(f.density_grid(), torch.full((10, 10, 10), math.log1p(math.exp(-1.0))))
    assert f.voxel_size == pytest.approx(0.2)
    with pytest.raises(ValueError):
        VoxelField(grid_size=1, channels=3)


def test_activation_uses_d_scale_and_shift() -> None:
    f = VoxelField(grid_size=4, channels=3, density_shift=-2.0)
    with torch.no_grad():
        f.d_scale.fill_(math.log(3.0))
        f.density.fill_(1.5)
    assert torch.allclose(f.density_grid(), F.softplus(torch.tensor(1.5 * 3.0 - 2.0)).expand(4, 4, 4))
    assert f.occupancy(2.0).all() and not f.occupancy(3.0).any()


def test_background_is_continuous_around_the_seam() -> None:
    torch.manual_seed(0)
    f = VoxelField(grid_size=4, channels=3)
    a = torch.tensor([[math.sin(-1e-4), 0.3, math.cos(1e-4)]])  # azimuth just under 360 deg (u ~ 1)
    b = torch.tensor([[math.sin(1e-4), 0.3, math.cos(1e-4)]])  # just over 0 deg (u ~ 0)
    assert torch.allclose(f.background(a), f.background(b), atol=1e-3)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    out = f.background(dirs)
    assert out.shape == (64, 3)
    assert out.min() >= f.bg.min() - 1e-5 and out.max() <= f.bg.max() + 1e-5  # a convex blend of texels


def test_param_groups_and_save_load(tmp_path) -> None:
    torch.manual_seed(0)
    f = VoxelField(grid_size=6, channels=3, bbox=1.5, density_shift=-0.5, bg_res=3)
    groups = f.param_groups(lr=0.05, bg_lr=1e-4)
    assert [g["lr"] for g in groups] == [0.05, 1e-4]
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in f.parameters()}
    torch.optim.Adamax(groups)  # accepted as is
    with torch.no_grad():
        f.density.normal_()
        f.d_scale.fill_(0.3)
    path = f.save(tmp_path / "field.pt", extra={"step": 7, "prompt": "a red cube"})
    g = VoxelField.load(path)
    assert g.config() == f.config() == {"grid_size": 6, "channels": 3, "bbox": 1.5, "density_shift": -0.5, "bg_res": 3,
                                        "feature_activation": "identity"}
    assert g.extra == {"step": 7, "prompt": "a red cube"}
    for (k, a), (_, b) in zip(f.state_dict().items(), g.state_dict().items()):
        assert torch.equal(a, b), k
    h = VoxelField(**f.config())
    h.load_state_dict(f.state_dict())
    assert torch.equal(h.density_grid(), f.density_grid())
    torch.save({"not": "a field"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError):
        VoxelField.load(tmp_path / "bad.pt")


def test_tanh_features_bound_what_is_rendered() -> None:
    from sjc_engine.cameras import spherical_camera
    from sjc_engine.renderer import render_image

    torch.manual_seed(0)
    f = VoxelField(grid_size=8, channels=3, feature_activation="tanh")
    g = VoxelField(**{**f.config(), "feature_activation": "identity"})
    g.load_state_dict(f.state_dict())
    with torch.no_grad():
        for field in (f, g):
            field.features.mul_(10.0)
            field.bg.mul_(10.0)
            field.density.fill_(3.0)
    cam = spherical_camera(30.0, 20.0, 2.5, 50.0, 8)
    tanh_img, raw_img = render_image(f, cam).image, render_image(g, cam).image
    assert tanh_img.abs().max() <= 1.0 + 1e-5 and raw_img.abs().max() > 3.0
    dirs = torch.nn.functional.normalize(torch.randn(16, 3), dim=-1)
    assert torch.allclose(f.background(dirs), torch.tanh(g.background(dirs)))
    with pytest.raises(ValueError):
        VoxelField(grid_size=4, channels=3, feature_activation="relu")  # type: ignore[arg-type]
