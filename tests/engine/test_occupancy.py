"""Empty-space skipping: the occupancy bitfield, and renders equal to the dense path where samples carry weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sjc_engine.cameras import sample_camera
from sjc_engine.composite import WEIGHT_THRESHOLD
from sjc_engine.field import VoxelField
from sjc_engine.native import native_lib
from sjc_engine.occupancy import OccupancyGrid, OccupancySettings, cell_max, coarse_cells
from sjc_engine.renderer import ray_box, render_rays
from sjc_engine.trilinear import trilinear_rays

N = 40
PATHS = ["torch"] + (["native"] if native_lib() is not None else [])


def test_bitfield_marks_the_cells_of_a_dense_node_and_their_neighbours() -> None:
    sigma = torch.zeros(N, N, N)
    sigma[10, 21, 39] = 1.0  # node 10 borders voxels 9 and 10 (coarse 2); node 39 is the last (voxel 38, coarse 9)
    grid = OccupancyGrid.from_density(sigma, step=0.01, settings=OccupancySettings(cell=4, dilation=0))
    g = coarse_cells(N, 4)
    assert grid.bits.shape == (g, g, g) == (10, 10, 10)
    # the node's voxels: x 9 and 10 (coarse 2), y 20 and 21 (coarse 5), z 38 only (coarse 9)
    expected = torch.zeros(g, g, g, dtype=torch.uint8)
    expected[2, 5, 9] = 1
    assert torch.equal(grid.bits, expected)
    u = torch.tensor([[9.5, 20.2, 38.9], [9.5, 19.9, 38.9], [12.0, 20.5, 39.0]])  # in, next y cell, next x cell
    assert grid.sample_mask(u, N).tolist() == [True, False, False]
    dilated = OccupancyGrid.from_density(sigma, step=0.01, settings=OccupancySettings(cell=4, dilation=1))
    assert int(dilated.bits.sum()) == 3 * 3 * 2  # a 3x3x3 block cut by the box's last face
    assert dilated.bits[1:4, 4:7, 8:10].all()
    below = OccupancyGrid.from_density(sigma, step=1e-6, settings=OccupancySettings(cell=4))
    assert int(below.bits.sum()) == 0  # sigma * step = 1e-6 < 1e-5: empty


@pytest.mark.parametrize("n, cell", [(5, 4), (12, 3), (40, 4), (41, 4), (17, 1), (9, 8)])
def test_cell_max_is_the_max_over_each_cells_voxels(n: int, cell: int) -> None:
    torch.manual_seed(n + cell)
    values = torch.randn(n, n, n)
    values[0, 1, 2] = float("nan")  # a NaN wins its cells, as in max_pool3d
    vox = torch.nn.functional.max_pool3d(values[None, None], kernel_size=2, stride=1)[0, 0]  # (n-1)^3 voxel max
    g = coarse_cells(n, cell)
    expected = torch.empty(g, g, g)
    for a in range(g):
        for b in range(g):
            for c in range(g):
                block = vox[a * cell : (a + 1) * cell, b * cell : (b + 1) * cell, c * cell : (c + 1) * cell]
                expected[a, b, c] = block.max()
    torch.testing.assert_close(cell_max(values, cell), expected, rtol=0, atol=0, equal_nan=True)
    assert cell_max(values, cell).isnan().any()


def test_field_refresh_builds_the_grid_of_its_density() -> None:
    torch.manual_seed(1)
    f = VoxelField(N, 3)
    with torch.no_grad():
        noise = torch.randn(N, N, N)
        f.density[0] = torch.where(f.grid_points().norm(dim=-1) < 0.5, 8.0 * noise, noise - 30.0)  # a noisy ball
        f.d_scale.fill_(0.4)
    for settings in (OccupancySettings(cell=4), OccupancySettings(cell=3, dilation=0, tau_threshold=0.02)):
        step = 0.5 * f.voxel_size
        expected = OccupancyGrid.from_density(f.density_grid().detach(), step, settings)
        got = f.refresh_occupancy(step, settings)
        assert torch.equal(got.bits, expected.bits) and 0 < int(got.bits.sum()) < got.bits.numel()
        assert got.cell == settings.cell and got.stop_transmittance == settings.stop_transmittance


def test_bitfield_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n, n, n"):
        OccupancyGrid.from_density(torch.zeros(4, 4, 5), 0.1)
    with pytest.raises(ValueError, match="uint8"):
        OccupancyGrid(torch.ones(2, 2, 2), cell=4)
    with pytest.raises(ValueError, match="stop_transmittance"):
        OccupancyGrid(torch.ones(2, 2, 2, dtype=torch.uint8), cell=4, stop_transmittance=1.0)


def _ball_field(empty_tau: float) -> VoxelField:
    """An opaque ball (a sample's thickness ~1.3) in empty space whose samples have thickness ``empty_tau``."""
    torch.manual_seed(0)
    f = VoxelField(N, 3, density_shift=0.0, feature_activation="tanh")
    step = 0.5 * f.voxel_size
    empty_raw = float(np.log(np.expm1(empty_tau / step)))  # softplus^-1(empty_tau / step)
    r = f.grid_points().norm(dim=-1)
    with torch.no_grad():
        f.density[0] = torch.where(r < 0.45, 50.0, empty_raw)
    return f


def _rays(size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    o, d = sample_camera(np.random.default_rng(seed), size, 1.8).rays()
    return o.reshape(-1, 3), d.reshape(-1, 3)


def _render_and_grads(f: VoxelField, o: torch.Tensor, d: torch.Tensor):
    f.zero_grad()
    out = render_rays(f, o, d)
    target = torch.linspace(-1, 1, out.features.numel()).view_as(out.features)
    loss = (out.features - target).square().sum() + 10 * torch.log1p(10 * out.weights).mean() + out.depth.mean()
    loss.backward()
    return out, f.density.grad[0].clone(), f.features.grad.clone()


def _weighted_nodes(f: VoxelField, o: torch.Tensor, d: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Bool (N, N, N): grid nodes that some sample with weight >= 1e-4 (dense render) reads from."""
    step = 0.5 * f.voxel_size
    t_min, t_max = ray_box(o, d, f.bbox)
    counts = torch.ceil((t_max - t_min) / step).clamp(min=0).long()
    hit = (counts > 0).nonzero().squeeze(1)
    counts, k = counts[hit], int(counts[hit].max())
    scale = (N - 1) / (2.0 * f.bbox)
    start = (o[hit] + t_min[hit, None] * d[hit] + f.bbox) * scale
    probe = torch.zeros(1, N**3, requires_grad=True)
    (vals,) = trilinear_rays(start, d[hit] * step * scale, counts, k, N, probe)
    (vals[0] * (weights.view(len(hit), k) >= WEIGHT_THRESHOLD)).sum().backward()
    return (probe.grad.view(N, N, N) > 0)


@pytest.mark.parametrize("path", PATHS)
def test_skipping_equals_the_dense_path_where_samples_carry_weight(path: str, monkeypatch) -> None:
    if path == "torch":
        monkeypatch.setattr("sjc_engine.trilinear.native_supports", lambda *t: False)
        monkeypatch.setattr("sjc_engine.march.native_supports", lambda *t: False)  # and the fused renderer
    f = _ball_field(empty_tau=4e-6)  # below the occupancy threshold (1e-5): empty space is skipped
    o, d = _rays()
    dense, gd_dense, gf_dense = _render_and_grads(f, o, d)
    grid = f.refresh_occupancy(0.5 * f.voxel_size)
    assert 0.05 < grid.fraction < 0.6
    skip, gd_skip, gf_skip = _render_and_grads(f, o, d)

    # far fewer samples looked up: empty space and the inside of the ball are skipped
    assert skip.n_samples < 0.6 * dense.n_samples
    # values: the skipped samples' thickness (<= 4e-6 each, ~150 per ray) is all that differs
    assert torch.allclose(skip.features, dense.features, atol=2e-3)
    assert torch.allclose(skip.opacity, dense.opacity, atol=2e-3)
    assert torch.allclose(skip.depth, dense.depth, atol=2e-2)
    w_d, w_s = dense.weights, skip.weights
    carry = w_d >= WEIGHT_THRESHOLD
    assert carry.sum() > 1000
    assert torch.allclose(w_s[carry], w_d[carry], rtol=2e-3, atol=1e-6)
    assert (w_s[~carry] < WEIGHT_THRESHOLD).all()
    # gradients: features everywhere (only weight-carrying samples give them one), density where such samples read
    assert torch.allclose(gf_skip, gf_dense, rtol=1e-2, atol=1e-3 * float(gf_dense.abs().max()))
    nodes = _weighted_nodes(f, o, d, w_d.detach())
    assert nodes.sum() > 500
    scale = float(gd_dense[nodes].abs().max())
    assert torch.allclose(gd_skip[nodes], gd_dense[nodes], rtol=1e-2, atol=1e-2 * scale)
    # and skipped nodes get no gradient at all (nothing was looked up there)
    vox = grid.bits.float().repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)[: N - 1, : N - 1, : N - 1]
    near = torch.nn.functional.max_pool3d(torch.nn.functional.pad(vox[None, None], (1,) * 6), 2, stride=1)[0, 0]  # (N, N, N)
    interior = near == 0  # nodes all of whose voxels are in empty cells
    assert interior.sum() > 1000
    assert (gd_skip[interior] == 0).all()


@pytest.mark.parametrize("path", PATHS)
def test_a_full_grid_is_exactly_the_dense_path(path: str, monkeypatch) -> None:
    if path == "torch":
        monkeypatch.setattr("sjc_engine.trilinear.native_supports", lambda *t: False)
        monkeypatch.setattr("sjc_engine.march.native_supports", lambda *t: False)  # and the fused renderer
    torch.manual_seed(1)
    f = VoxelField(N, 4)
    with torch.no_grad():
        f.density.normal_()
    o, d = _rays(16, seed=3)
    dense, gd_dense, gf_dense = _render_and_grads(f, o, d)
    f.occupancy_grid = OccupancyGrid.full(N)
    full, gd_full, gf_full = _render_and_grads(f, o, d)
    assert full.n_samples == dense.n_samples
    assert torch.equal(full.features, dense.features)
    assert torch.equal(gd_full, gd_dense) and torch.equal(gf_full, gf_dense)


@pytest.mark.skipif(native_lib() is None, reason="C kernels not built")
def test_native_and_torch_paths_skip_the_same_samples(monkeypatch) -> None:
    f = _ball_field(empty_tau=4e-6)
    f.refresh_occupancy(0.5 * f.voxel_size)
    o, d = _rays(seed=5)
    native, gd_n, gf_n = _render_and_grads(f, o, d)
    monkeypatch.setattr("sjc_engine.trilinear.native_supports", lambda *t: False)
    monkeypatch.setattr("sjc_engine.march.native_supports", lambda *t: False)  # and the fused renderer
    torch_path, gd_t, gf_t = _render_and_grads(f, o, d)
    assert native.n_samples == torch_path.n_samples
    assert torch.allclose(native.features, torch_path.features, atol=1e-5)
    assert torch.allclose(gd_n, gd_t, atol=1e-5) and torch.allclose(gf_n, gf_t, atol=1e-5)


def test_loop_refreshes_the_grid_and_resumes_with_it() -> None:
    from sjc_engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
    from sjc_engine.optimize import run_sjc
    from tests.engine.test_optimize import Recorder, oracle, same_field, small_config

    def start() -> VoxelField:
        f = VoxelField(24, 3, density_shift=0.0)
        step = 0.5 * f.voxel_size
        r = f.grid_points().norm(dim=-1)
        with torch.no_grad():
            f.density[0] = torch.where(r < 0.4, 5.0, float(np.log(np.expm1(1e-7 / step))))
        return f

    cfg = small_config(steps=9, checkpoint_every=5, grid_size=24, density_shift=0.0)
    settings = OccupancySettings(every=4)
    rec = Recorder()
    full = run_sjc(cfg, oracle(), rec, field=start(), occupancy=settings)
    state = rec.states[5]
    assert state["occupancy"] is not None and 0 < state["occupancy"]["bits"].float().mean() < 1
    assert full.field.occupancy_grid is not None  # rebuilt at the end for renders of the result
    resumed = run_sjc(cfg, oracle(), Recorder(), resume=state, occupancy=settings)
    assert same_field(full.field, resumed.field)
    dense = run_sjc(cfg, oracle(), Recorder(), field=start(), occupancy=None)
    assert dense.field.occupancy_grid is None
    assert not same_field(full.field, dense.field)  # skipping changed what empty space learnt, nothing more


@pytest.mark.parametrize("path", PATHS)
def test_clipping_rays_to_the_occupied_box_changes_nothing(path: str, monkeypatch) -> None:
    """Rays start at their first sample that can meet the occupied cells' bounding box and stop after the last:
    the samples left out were skipped anyway, so values, weights (dense layout) and gradients match the
    unclipped skipping render to rounding (the kept samples' positions are summed from a later start: ~1e-6
    voxel, which the ball's steep density edge turns into ~1e-5 in a weight)."""
    if path == "torch":
        monkeypatch.setattr("sjc_engine.trilinear.native_supports", lambda *t: False)
        monkeypatch.setattr("sjc_engine.march.native_supports", lambda *t: False)  # and the fused renderer
    torch.manual_seed(0)
    f = VoxelField(N, 3, density_shift=0.0, feature_activation="tanh")
    r = (f.grid_points() - torch.tensor([0.2, -0.1, 0.0])).norm(dim=-1)
    with torch.no_grad():
        f.density[0] = torch.where(r < 0.3, 50.0, -20.0)  # a small ball off centre: a small occupied box
    f.refresh_occupancy(0.5 * f.voxel_size)
    o, d = _rays(seed=2)
    clipped, gd_c, gf_c = _render_and_grads(f, o, d)
    ranges = []
    real = OccupancyGrid.sample_range

    def spy(self, start, delta, counts, n):
        first, kept = real(self, start, delta, counts, n)
        ranges.append((first, kept, counts))
        return first, kept

    monkeypatch.setattr(OccupancyGrid, "sample_range", spy)
    clipped_again, _, _ = _render_and_grads(f, o, d)
    first, kept, counts = ranges[0]
    assert torch.equal(clipped_again.features, clipped.features)
    assert int(kept.sum()) < 0.5 * int(counts.sum())  # most samples are left out
    monkeypatch.setattr(OccupancyGrid, "sample_range", lambda self, s, dl, counts, n: (torch.zeros_like(counts), counts))
    full, gd_f, gf_f = _render_and_grads(f, o, d)

    assert clipped.n_samples == full.n_samples  # the same samples looked up
    assert clipped.weights.shape == full.weights.shape
    assert (full.weights >= WEIGHT_THRESHOLD).sum() > 300
    assert torch.allclose(clipped.weights, full.weights, rtol=0, atol=2e-5)
    assert torch.allclose(clipped.features, full.features, rtol=0, atol=2e-5)
    assert torch.allclose(clipped.depth, full.depth, rtol=0, atol=1e-4)
    assert torch.allclose(clipped.opacity, full.opacity, rtol=0, atol=2e-5)
    for g_c, g_f in ((gd_c, gd_f), (gf_c, gf_f)):
        assert g_f.abs().max() > 0
        assert torch.allclose(g_c, g_f, rtol=1e-3, atol=1e-3 * float(g_f.abs().max()))
        assert torch.equal(g_c == 0, g_f == 0)  # the same nodes get a gradient


def test_sample_range_keeps_every_sample_in_an_occupied_cell() -> None:
    """Brute force: every sample in an occupied cell lies in [first, first + kept) of its ray."""
    g = coarse_cells(N, 4)
    bits = torch.zeros(g, g, g, dtype=torch.uint8)
    bits[3:6, 2:4, 7:9] = 1
    bits[0, 9, 9] = 1  # a cell at the grid's edge: points outside the grid clamp into it
    grid = OccupancyGrid(bits, 4, 0.0)
    gen = torch.Generator().manual_seed(0)
    R, k = 4000, 120
    start = torch.rand(R, 3, generator=gen) * (N + 20) - 10
    delta = torch.randn(R, 3, generator=gen) * 0.5
    delta[:200, 0] = 0.0  # rays parallel to an axis
    delta[200:300, :2] = 0.0
    counts = torch.randint(1, k + 1, (R,), generator=gen)
    first, kept = grid.sample_range(start, delta, counts, N)
    i = torch.arange(k)
    u = (start[:, None, :] + i[None, :, None] * delta[:, None, :]).reshape(-1, 3)
    occupied = grid.sample_mask(u, N).view(R, k) & (i[None, :] < counts[:, None])
    within = (i[None, :] >= first[:, None]) & (i[None, :] < (first + kept)[:, None])
    assert occupied.sum() > 1000
    assert not (occupied & ~within).any()
    assert (first + kept <= counts).all() and (kept >= 0).all()
    assert int(kept.sum()) < 0.5 * int(counts.sum())
    empty = OccupancyGrid(torch.zeros_like(bits), 4, 0.0)
    assert int(empty.sample_range(start, delta, counts, N)[1].sum()) == 0
