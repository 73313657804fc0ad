"""Trilinear lookups: the torch path against grid_sample, the C kernels against the torch path, the build."""

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

import sjc_engine.native.build as native_build
from sjc_engine.native import native_lib
from sjc_engine.trilinear import (
    trilinear_corners,
    trilinear_multi,
    trilinear_points,
    trilinear_rays,
    trilinear_rays_torch,
)


def test_trilinear_matches_grid_sample() -> None:
    torch.manual_seed(0)
    n = 7
    grid = torch.randn(3, n, n, n)
    x = torch.rand(200, 3) * 2 - 1  # world points in [-1, 1]^3
    x[:4] = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    idx, w = trilinear_corners((x + 1) / 2 * (n - 1), n)
    assert torch.allclose(w.sum(1), torch.ones(200))
    ours = trilinear_multi(idx, w, grid.view(3, -1))[0].T  # (3, 200)
    ref = F.grid_sample(grid[None], x[:, [2, 1, 0]].view(1, -1, 1, 1, 3), align_corners=True).view(3, -1)
    assert torch.allclose(ours, ref, atol=1e-5)
    # node values come back exactly at nodes
    assert torch.allclose(ours[:, 0], grid[:, 0, 0, 0]) and torch.allclose(ours[:, 1], grid[:, -1, -1, -1])


def test_trilinear_gradcheck() -> None:
    torch.manual_seed(0)
    n = 4
    grid = torch.randn(2, n**3, dtype=torch.float64, requires_grad=True)
    idx, w = trilinear_corners(torch.rand(30, 3, dtype=torch.float64) * (n - 1), n)
    assert torch.autograd.gradcheck(lambda g: trilinear_multi(idx, w, g)[0], (grid,))


# ---------------------------------------------------------------- native kernels vs the torch path


def _native_or_skip():
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
    _native_or_skip()
    n, R, k = 6, 96, 100  # R * k >= 8192: the two-thread split kicks in
    start, delta, counts = _ray_batch(n, R, k, torch.float32)
    torch.manual_seed(0)
    grids = [torch.randn(c, n**3) for c in channels]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for fn in (trilinear_rays, trilinear_rays_torch):
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
    _native_or_skip()
    monkeypatch.setenv("SJC_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native_build, "_native_state", {})
    lib = native_lib()
    assert lib is not None and len(list(tmp_path.glob("sjc-kernels-*.so"))) == 1
    assert native_lib() is lib  # built once per process
    monkeypatch.setenv("SJC_NATIVE", "0")
    monkeypatch.setattr(native_build, "_native_state", {})
    assert native_lib() is None


def test_native_rebuilds_after_a_source_edit(tmp_path, monkeypatch) -> None:
    """The cache is keyed by the sources' and headers' text: an edited .c or .h file gives a new library, not the
    cached one."""
    _native_or_skip()
    src = tmp_path / "src"
    src.mkdir()
    for name in (*native_build.SOURCES, *native_build.HEADERS):
        shutil.copy(native_build.SOURCE_DIR / name, src / name)
    monkeypatch.setattr(native_build, "SOURCE_DIR", src)
    monkeypatch.setenv("SJC_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native_build, "arch_flags", lambda: [[]])  # one build per source version
    assert native_build.build_native() is not None
    assert len(list((tmp_path / "cache").glob("sjc-kernels-*.so"))) == 1
    assert native_build.build_native() is not None  # cached: no new file
    assert len(list((tmp_path / "cache").glob("sjc-kernels-*.so"))) == 1
    with (src / "composite.c").open("a") as f:
        f.write("/* edited */\n")
    lib = native_build.build_native()
    assert lib is not None and lib.comp_fwd_f32.argtypes is not None
    assert len(list((tmp_path / "cache").glob("sjc-kernels-*.so"))) == 2
    with (src / "corner.h").open("a") as f:
        f.write("/* edited */\n")
    assert native_build.build_native() is not None
    assert len(list((tmp_path / "cache").glob("sjc-kernels-*.so"))) == 3


def test_native_cached_library_loads_without_a_compiler(tmp_path, monkeypatch) -> None:
    """A library built beforehand (the worker image's) loads where no compiler is; with neither, the kernels
    are off with a warning and the lookups still work (torch path)."""
    _native_or_skip()
    monkeypatch.setenv("SJC_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native_build, "_native_state", {})
    assert native_lib() is not None
    monkeypatch.setattr(native_build.shutil, "which", lambda name: None)
    monkeypatch.setattr(native_build, "_native_state", {})
    assert native_lib() is not None  # from the cache, no compiler needed
    monkeypatch.setenv("SJC_NATIVE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(native_build, "_native_state", {})
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert native_lib() is None
    grid = torch.randn(2, 3**3)
    out = trilinear_points(torch.full((1, 3), 1.0), 3, grid)[0]  # (1, 2): the node (1, 1, 1)
    assert torch.allclose(out[0], grid.view(2, 3, 3, 3)[:, 1, 1, 1])
