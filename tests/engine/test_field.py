"""VoxelField: initialisation, activation, lookups, background, save/load."""

import math

import pytest
import torch
import torch.nn.functional as F

from sjc_engine.field import VoxelField, trilinear, trilinear_corners


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


def test_trilinear_matches_grid_sample() -> None:
    torch.manual_seed(0)
    n = 7
    grid = torch.randn(3, n, n, n)
    x = torch.rand(200, 3) * 2 - 1  # world points in [-1, 1]^3
    x[:4] = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    idx, w = trilinear_corners((x + 1) / 2 * (n - 1), n)
    assert torch.allclose(w.sum(1), torch.ones(200))
    ours = trilinear(grid.view(3, -1), idx, w)  # (3, 200)
    ref = F.grid_sample(grid[None], x[:, [2, 1, 0]].view(1, -1, 1, 1, 3), align_corners=True).view(3, -1)
    assert torch.allclose(ours, ref, atol=1e-5)
    # node values come back exactly at nodes
    assert torch.allclose(ours[:, 0], grid[:, 0, 0, 0]) and torch.allclose(ours[:, 1], grid[:, -1, -1, -1])


def test_trilinear_gradcheck() -> None:
    torch.manual_seed(0)
    n = 4
    grid = torch.randn(2, n**3, dtype=torch.float64, requires_grad=True)
    idx, w = trilinear_corners(torch.rand(30, 3, dtype=torch.float64) * (n - 1), n)
    assert torch.autograd.gradcheck(lambda g: trilinear(g, idx, w), (grid,))


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
    assert g.config() == f.config() == {"grid_size": 6, "channels": 3, "bbox": 1.5, "density_shift": -0.5, "bg_res": 3}
    assert g.extra == {"step": 7, "prompt": "a red cube"}
    for (k, a), (_, b) in zip(f.state_dict().items(), g.state_dict().items()):
        assert torch.equal(a, b), k
    h = VoxelField(**f.config())
    h.load_state_dict(f.state_dict())
    assert torch.equal(h.density_grid(), f.density_grid())
    torch.save({"not": "a field"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError):
        VoxelField.load(tmp_path / "bad.pt")


# ---------------------------------------------------------------- native kernels vs the torch path


def _native_or_skip():
    import os
    import shutil

    from sjc_engine.field import native_lib

    if os.environ.get("SJC_NATIVE", "1") == "0" or shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("native trilinear kernels turned off or no C compiler")
    assert native_lib() is not None, "a C compiler is present but the trilinear kernels did not build"


def _ray_batch(n: int, R: int, k: int, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(R, 3, generator=g, dtype=dtype) * (n - 1)
    start[:3] = torch.tensor([[0.0, 0.0, 0.0], [n - 1.0, n - 1.0, n - 1.0], [-0.5, n - 0.5, 1.0]], dtype=dtype)
    delta = (torch.rand(R, 3, generator=g, dtype=dtype) - 0.5) * 0.6  # < 1 voxel: runs of samples per cell
    counts = torch.randint(0, k + 1, (R,), generator=g)
    counts[:2] = torch.tensor([k, 0])
    return start, delta, counts


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels", [(1, 4), (1, 3), (1,), (3, 17)])
def test_native_rays_match_torch_path(threads: int, channels: tuple[int, ...]) -> None:
    """Values and gradients of the C kernels equal the torch path's, with the two-thread splits (even and odd
    channel counts), rays ending early or empty, clamped samples, zero-gradient skipping and > 16 channels."""
    from sjc_engine.field import _torch_rays, trilinear_rays

    _native_or_skip()
    n, R, k = 6, 96, 100  # R * k >= 8192: the two-thread split kicks in
    start, delta, counts = _ray_batch(n, R, k, torch.float32)
    torch.manual_seed(0)
    grids = [torch.randn(c, n**3) for c in channels]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for fn in (trilinear_rays, _torch_rays):
            leaves = [g.clone().requires_grad_(True) for g in grids]
            outs = fn(start, delta, counts, k, n, *leaves)
            upstream = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(outs)]
            upstream[0][:, : R // 3] = 0  # rays with no gradient at all are skipped
            torch.autograd.backward(outs, upstream)
            results.append(([o.detach() for o in outs], [g.grad for g in leaves]))
    finally:
        torch.set_num_threads(old)
    (o_nat, g_nat), (o_ref, g_ref) = results
    for a, b, c in zip(o_nat, o_ref, channels):
        assert a.shape == b.shape == (c, R, k)
        assert torch.allclose(a, b, atol=1e-5)
    inside = torch.arange(k)[None, :] < counts[:, None]
    assert torch.all(o_nat[0][:, ~inside] == 0)  # zero past each ray's end
    for a, b in zip(g_nat, g_ref):
        assert a.abs().sum() > 0
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)


def test_native_gradcheck_and_points() -> None:
    from sjc_engine.field import trilinear_points, trilinear_rays

    _native_or_skip()
    n, R, k = 4, 7, 9
    start, delta, counts = _ray_batch(n, R, k, torch.float64, seed=1)
    torch.manual_seed(0)
    a = torch.randn(1, n**3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, n**3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: trilinear_rays(start, delta, counts, k, n, x, y), (a, b))
    # points: same as the torch path, and as grid_sample
    x = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    u = (x + 1) / 2 * (n - 1)
    ours = trilinear_points(u, n, b)[0]  # (50, 2)
    ref = F.grid_sample(b.detach().view(1, 2, n, n, n), x[:, [2, 1, 0]].view(1, -1, 1, 1, 3), align_corners=True)
    assert torch.allclose(ours, ref.view(2, -1).T, atol=1e-10)
    assert torch.autograd.gradcheck(lambda y: trilinear_points(u, n, y)[0], (b,))
    # a NaN point reads NaN and sends no gradient anywhere
    u[0, 1] = float("nan")
    out = trilinear_points(u, n, b)[0]
    assert torch.isnan(out[0]).all() and not torch.isnan(out[1:]).any()
    out[1:].sum().backward()
    assert torch.isfinite(b.grad).all()


def test_native_build_into_a_fresh_cache(tmp_path, monkeypatch) -> None:
    """The kernels build from source into $SJC_NATIVE_CACHE and load; SJC_NATIVE=0 turns them off."""
    import sjc_engine.field as field_module

    _native_or_skip()
    monkeypatch.setenv("SJC_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(field_module, "_native_state", {})
    lib = field_module.native_lib()
    assert lib is not None and len(list(tmp_path.glob("trilinear-*.so"))) == 1
    assert field_module.native_lib() is lib  # built once per process
    monkeypatch.setenv("SJC_NATIVE", "0")
    monkeypatch.setattr(field_module, "_native_state", {})
    assert field_module.native_lib() is None
