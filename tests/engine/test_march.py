"""The fused native renderer (sjc_engine/march.py, native/march.c) against the torch path: values, counts and
gradients of density, features, d_scale and background, with and without an occupancy grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sjc_engine.cameras import sample_camera
from sjc_engine.field import VoxelField
from sjc_engine.march import fused_supported
from sjc_engine.native import native_lib
from sjc_engine.renderer import render_rays
from tests.fixtures.render import PARAMS, param_inputs, render_with, torch_threads

pytestmark = pytest.mark.skipif(native_lib() is None, reason="C kernels not built")

N = 40


def _torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every native kernel off for the renderer: the pure torch path."""
    for mod in ("march", "trilinear", "composite"):
        monkeypatch.setattr(f"sjc_engine.{mod}.native_supports", lambda *t: False)


def _rays(size: int = 20, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera's rays plus two that miss the box."""
    o, d = sample_camera(np.random.default_rng(seed), size, 1.8).rays(dtype=dtype)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    miss_o = torch.tensor([[0.0, 3.0, 0.0], [3.0, 3.0, 3.0]], dtype=dtype)
    miss_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.cat([o, miss_o]), torch.cat([d, miss_d])


def _field(state: str, activation: str, dtype: torch.dtype) -> VoxelField:
    """``random``: every sample carries weight; ``ball``: an opaque ball in near-empty space (rays stop in it)."""
    torch.manual_seed(0)
    f = VoxelField(N, 3, feature_activation=activation, bg_res=4).to(dtype)
    with torch.no_grad():
        if state == "random":
            f.density.normal_(0.0, 2.0)
        else:
            r = f.grid_points().to(dtype).norm(dim=-1)
            f.density[0] = torch.where(r < 0.35, 40.0, -12.0)
        f.d_scale.fill_(0.2)
    return f


def _render(f: VoxelField, o: torch.Tensor, d: torch.Tensor):
    """Render, a loss on every output (the emptiness loss on the weights too), and the parameters' gradients."""
    f.zero_grad(set_to_none=True)
    out = render_rays(f, o, d)
    g = torch.Generator().manual_seed(1)
    target = torch.randn(out.features.shape, generator=g, dtype=out.features.dtype)
    loss = ((out.features - target).square().sum() + 10 * torch.log1p(10 * out.weights).mean()
            + out.depth.mean() + 0.3 * out.opacity.sum())
    loss.backward()
    return out, [getattr(f, k).grad.clone() for k in PARAMS]


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    """Equal to rounding. float64 too only to ~3e-8 relative: the torch path's thickness is
    ``sigma * (mask * step)``, a float32 copy of the step (bool mask times a Python float)."""
    tol = 1e-4 if dtype == torch.float32 else 1e-6
    a, b = a.detach(), b.detach()
    return torch.allclose(a, b, rtol=tol, atol=tol * max(float(b.abs().max()), 1.0))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", ["identity", "tanh"])
@pytest.mark.parametrize("state", ["random", "ball", "ball+grid"])
def test_fused_matches_the_torch_path(state: str, activation: str, dtype: torch.dtype, threads: int,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    f = _field(state.split("+")[0], activation, dtype)
    if state.endswith("+grid"):
        f.refresh_occupancy(0.5 * f.voxel_size)
        assert 0.05 < f.occupancy_grid.fraction < 0.8
    o, d = _rays(dtype=dtype)
    assert fused_supported(f, o)
    with torch_threads(threads):
        fused, g_fused = _render(f, o, d)
        _torch_path(monkeypatch)
        assert not fused_supported(f, o)
        ref, g_ref = _render(f, o, d)

    assert fused.n_samples == ref.n_samples and fused.n_shaded == ref.n_shaded
    assert 0 < fused.n_shaded <= fused.n_samples
    assert fused.weights.shape == ref.weights.shape and fused.weights.dim() == 1
    for a, b in ((fused.features, ref.features), (fused.depth, ref.depth), (fused.opacity, ref.opacity),
                 (fused.weights, ref.weights)):
        assert a.dtype == dtype and _close(a, b, dtype)
    assert torch.equal(fused.weights == 0, ref.weights == 0)  # the same samples weigh, the same are skipped
    # the two rays that miss the box: background, background depth, no opacity
    assert torch.equal(fused.opacity[-2:], torch.zeros(2, dtype=dtype))
    assert torch.allclose(fused.features[-2:], f.background(d[-2:]).detach())
    for name, a, b in zip(PARAMS, g_fused, g_ref):
        assert b.abs().max() > 0, name
        assert _close(a, b, dtype), (name, float((a - b).abs().max()), float(b.abs().max()))
    if state.startswith("ball"):  # opaque rays end early with a grid; nodes read by no weighted sample get nothing
        assert torch.equal(g_fused[1] == 0, g_ref[1] == 0)
        assert (fused.opacity[:-2] > 0.999).sum() > 20


def test_stopping_rays_look_up_fewer_samples() -> None:
    """With a grid, rays stop once their transmittance falls below the floor: fewer samples looked up."""
    f = _field("ball", "identity", torch.float32)
    o, d = _rays()
    dense = render_rays(f, o, d)
    f.refresh_occupancy(0.5 * f.voxel_size)
    skip = render_rays(f, o, d)
    assert skip.n_samples < 0.5 * dense.n_samples
    assert skip.n_shaded == dense.n_shaded
    assert torch.allclose(skip.features, dense.features, atol=1e-3)


@pytest.mark.parametrize("state", ["random", "ball+grid"])
def test_a_render_without_gradient_keeps_nothing_for_a_backward(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under no_grad (the turntable, previews, colours) the forward keeps no raw densities or features for a
    backward, and renders the same bits as a render with gradients."""
    import sjc_engine.march as march

    f = _field(state.split("+")[0], "tanh", torch.float32)
    if state.endswith("grid"):
        f.refresh_occupancy(0.5 * f.voxel_size)
    o, d = _rays()
    with_grad = render_rays(f, o, d, emptiness_scale=10.0)
    seen = []
    apply = march._FusedRender.apply
    monkeypatch.setattr(march._FusedRender, "apply", lambda *a: seen.append(a[5]) or apply(*a))
    with torch.no_grad():
        plain = render_rays(f, o, d, emptiness_scale=10.0)
    assert [cfg.saved for cfg in seen] == [False]
    for a, b in ((plain.features, with_grad.features), (plain.depth, with_grad.depth),
                 (plain.opacity, with_grad.opacity), (plain.weights, with_grad.weights),
                 (plain.emptiness, with_grad.emptiness)):
        assert torch.equal(a, b.detach())
    assert (plain.n_samples, plain.n_shaded) == (with_grad.n_samples, with_grad.n_shaded)
    render_rays(f, o, d)  # a differentiable render keeps them
    assert seen[-1].saved


def test_density_cut_gives_each_backward_thread_half_the_work() -> None:
    from sjc_engine.march import DENSITY_COST, FEATURE_COST, _density_cut

    gen = torch.Generator().manual_seed(0)
    looked = torch.randint(0, 300, (500,), generator=gen)
    stats = torch.stack([looked, looked // 3], 1)  # (n, 2) looked up, shaded
    cost = lambda c: c[0] * stats[:, 0].double() + c[1] * stats[:, 1].double()  # noqa: E731
    dens, feats = cost(DENSITY_COST), cost(FEATURE_COST)
    cut = _density_cut(stats, None)
    first, second = feats.sum() + dens[:cut].sum(), dens[cut:].sum()
    assert 0 < cut < 500 and abs(float(first - second)) <= 2 * float(dens.max())  # as even as a ray allows
    order = torch.randperm(500, generator=gen)  # cut in walk order
    cut = _density_cut(stats, order)
    assert abs(float(feats.sum() + dens[order[:cut]].sum() - dens[order[cut:]].sum())) <= 2 * float(dens.max())
    # a feature part larger than the density part: the first thread takes only it, the second all the density
    assert _density_cut(torch.stack([looked, looked * 40], 1), None) == 0


@pytest.mark.parametrize("state", ["random", "ball+grid"])
def test_two_backward_threads_give_the_one_thread_gradients(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With two threads the density path is split between them at _density_cut (each thread its own density
    gradient): the same gradients as one thread, to float rounding. (The planes' backward: with node records each
    thread takes both parts of its rays, tests/engine/test_records.py.)"""
    import sjc_engine.march as march

    monkeypatch.setattr("sjc_engine.records.ENABLED", False)
    f = _field(state.split("+")[0], "tanh", torch.float32)
    if state.endswith("grid"):
        f.refresh_occupancy(0.5 * f.voxel_size)
    o, d = _rays()
    cuts = []
    cut_of = march._density_cut
    monkeypatch.setattr(march, "_density_cut", lambda *a: cuts.append(cut_of(*a)) or cuts[-1])
    with torch_threads(1):
        _, one = _render(f, o, d)
    assert cuts == []
    with torch_threads(2):
        out, two = _render(f, o, d)
    assert len(cuts) == 1 and 0 <= cuts[0] < o.shape[0] - 2  # (every ray but the two misses hits the box)
    if state == "ball+grid":  # few shaded samples: the density path is shared (a random field shades all: none)
        assert cuts[0] > 0
    for name, a, b in zip(PARAMS, two, one):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max())), name


def test_fused_gradients_match_finite_differences() -> None:
    """float64, a small field: the fused backward against finite differences (density, features, d_scale, bg)."""
    torch.manual_seed(0)
    f = VoxelField(grid_size=5, channels=2, bg_res=2, feature_activation="tanh").double()
    with torch.no_grad():
        f.density.normal_(0.0, 1.0)
    o, d = _rays(size=3, seed=2, dtype=torch.float64)
    assert fused_supported(f, o)

    render = render_with(f, o, d)
    inputs = param_inputs(f)
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_other_fields_take_the_torch_path() -> None:
    """More channels than the kernel takes, or a subclass with its own activation: not fused."""
    o, d = _rays(size=4)
    assert not fused_supported(VoxelField(8, 17), o)

    class Squared(VoxelField):
        def activate(self, raw: torch.Tensor) -> torch.Tensor:
            return raw.square()

    f = Squared(8, 3)
    assert not fused_supported(f, o)
    out = render_rays(f, o, d)
    assert out.features.shape == (o.shape[0], 3)


@pytest.mark.parametrize("threads", [1, 2])
def test_walking_rays_in_direction_order_changes_only_rounding(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rays walked in direction order (large batches) give what the given order gives, to rounding."""
    import sjc_engine.march as march

    f = _field("ball", "tanh", torch.float32)
    f.refresh_occupancy(0.5 * f.voxel_size)
    o, d = _rays(size=24, seed=4)
    orders = []
    real_sort = march.HitRays.sort

    def spy(self: march.HitRays) -> None:
        real_sort(self)
        orders.append(self.order)

    with torch_threads(threads):
        given, g_given = _render(f, o, d)
        monkeypatch.setattr(march, "SORT_MIN_SAMPLES", 0)
        monkeypatch.setattr(march.HitRays, "sort", spy)
        walked, g_walked = _render(f, o, d)
    (order,) = orders
    n = order.numel()
    assert torch.equal(order.sort().values, torch.arange(n)) and not torch.equal(order, torch.arange(n))
    assert torch.equal(walked.features, given.features) and torch.equal(walked.weights, given.weights)
    assert walked.n_samples == given.n_samples and walked.n_shaded == given.n_shaded
    for a, b in zip(g_walked, g_given):
        assert _close(a, b, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_sample_range_equals_the_torch_ops(dtype: torch.dtype) -> None:
    """OccupancyGrid.sample_range's C pass gives the torch ops' integers exactly (NaN rays, axis-parallel rays,
    rays outside the grid, an empty grid)."""
    from sjc_engine.occupancy import OccupancyGrid, coarse_cells

    g = coarse_cells(N, 4)
    gen = torch.Generator().manual_seed(0)
    R = 5000
    start = (torch.rand(R, 3, generator=gen) * (N + 20) - 10).to(dtype)
    delta = (torch.randn(R, 3, generator=gen) * 0.5).to(dtype)
    delta[:200, 0] = 0.0
    delta[200:300, :2] = 0.0
    start[300:310] = float("nan")
    delta[310:320, 1] = float("nan")
    counts = torch.randint(0, 121, (R,), generator=gen)
    for density in (0.0, 0.01, 0.3):
        grid = OccupancyGrid((torch.rand(g, g, g, generator=gen) < density).to(torch.uint8), 4, 0.0)
        native = grid.sample_range(start, delta, counts, N)
        ref = grid.sample_range_torch(start, delta, counts, N)
        assert torch.equal(native[0], ref[0]) and torch.equal(native[1], ref[1])
        assert (int(ref[1].sum()) > 0) == (density > 0)


@pytest.mark.parametrize("state", ["random", "ball+grid"])
def test_plain_build_renders_what_the_default_build_renders(state: str, tmp_path, monkeypatch) -> None:
    """The kernels built without the CPU's vector flags (no AVX: the scalar trilinear sums) give the default
    build's values and gradients to float rounding, so a machine without AVX renders the same assets."""
    from sjc_engine.native import build as native_build

    o, d = _rays()
    default_lib = native_lib()
    monkeypatch.setenv("SJC_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native_build, "arch_flags", lambda: [[]])
    plain_lib = native_build.build_native()
    assert plain_lib is not None
    results = []
    for lib in (default_lib, plain_lib):
        monkeypatch.setattr(native_build, "_native_state", {"lib": lib})
        f = _field("ball" if state != "random" else "random", "tanh", torch.float32)
        if state == "ball+grid":
            f.refresh_occupancy(0.5 * f.voxel_size)
        results.append(_render(f, o, d))
    (out_a, grads_a), (out_b, grads_b) = results
    assert out_a.n_samples == out_b.n_samples and out_a.n_shaded == out_b.n_shaded
    for a, b in [(out_a.features, out_b.features), (out_a.weights, out_b.weights), *zip(grads_a, grads_b)]:
        assert _close(a, b, torch.float32)
