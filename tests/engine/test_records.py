"""Node records (sjc_engine/records.py): the fused renderer reading density and features from records and adding
its gradients into records gives the planes' values and gradients, bit for bit on one thread; the copies, the
choice and the zeroed buffers."""

from __future__ import annotations

import pytest
import torch

import sjc_engine.march as march
from sjc_engine import records
from sjc_engine.field import VoxelField
from sjc_engine.renderer import render_rays
from tests.engine.test_march import _field, _rays
from tests.fixtures.render import PARAMS, torch_threads

pytestmark = pytest.mark.skipif(not records.records_supported(3, torch.float32),
                                reason="records need the C kernels built with AVX2/FMA")


def _render(f: VoxelField, o: torch.Tensor, d: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every output of a render, and the parameters' gradients of a loss on all of them."""
    f.zero_grad(set_to_none=True)
    out = render_rays(f, o, d, emptiness_scale=10.0)
    target = torch.randn(out.features.shape, generator=torch.Generator().manual_seed(1))
    loss = ((out.features - target).square().sum() + out.emptiness + out.depth.mean() + 0.3 * out.opacity.sum()
            + (out.weights * torch.linspace(0, 1, out.weights.numel())).sum())
    loss.backward()
    outs = [out.features, out.depth, out.opacity, out.weights, out.emptiness]
    return [t.detach().clone() for t in outs] + [torch.tensor([out.n_samples, out.n_shaded])], \
        [getattr(f, k).grad.clone() for k in PARAMS]


def _both(f: VoxelField, o: torch.Tensor, d: torch.Tensor, monkeypatch: pytest.MonkeyPatch):
    """The render with planes, then with records (forced: whatever the count of lookups), counting the packs and
    the backwards into records."""
    calls = {"pack": 0, "unpack": 0}
    for name in calls:
        real = getattr(records, name)
        monkeypatch.setattr(records, name, lambda *a, real=real, name=name: calls.__setitem__(name, calls[name] + 1)
                            or real(*a))
    monkeypatch.setattr(records, "ENABLED", False)
    planes = _render(f, o, d)
    assert calls == {"pack": 0, "unpack": 0}
    monkeypatch.setattr(records, "ENABLED", True)
    monkeypatch.setattr(records, "MIN_SHADED_PER_NODE", 0.0)
    recs = _render(f, o, d)
    assert calls == {"pack": 1, "unpack": 1}
    return planes, recs


@pytest.mark.parametrize("activation", ["identity", "tanh"])
@pytest.mark.parametrize("state", ["random", "ball", "ball+grid"])
def test_records_give_the_planes_bits(state: str, activation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _field(state.split("+")[0], activation, torch.float32)
    with torch.no_grad():
        f.features.normal_(generator=torch.Generator().manual_seed(2))
    if state.endswith("grid"):  # only the occupied cells' box is packed
        f.refresh_occupancy(0.5 * f.voxel_size)
        lo = f.occupancy_grid.bits.nonzero().amin(0)
        assert int(lo.min()) > 0  # a box smaller than the grid
    o, d = _rays()
    with torch_threads(1):
        (planes, g_planes), (recs, g_recs) = _both(f, o, d, monkeypatch)
    assert int(planes[-1][1]) > 0
    for a, b in zip(planes + g_planes, recs + g_recs):
        assert torch.equal(a, b)
    assert float(g_recs[1].abs().sum()) > 0 and float(g_recs[0].abs().sum()) > 0


@pytest.mark.parametrize("state", ["random", "ball+grid"])
def test_two_threads_into_records_give_the_one_thread_gradients(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each thread takes both parts of its rays into records of its own, cut at _ray_cut; the sum is the one
    thread's gradients to float rounding."""
    f = _field(state.split("+")[0], "tanh", torch.float32)
    if state.endswith("grid"):
        f.refresh_occupancy(0.5 * f.voxel_size)
    o, d = _rays()
    monkeypatch.setattr(records, "MIN_SHADED_PER_NODE", 0.0)
    cuts = []
    cut_of = march._ray_cut
    monkeypatch.setattr(march, "_ray_cut", lambda *a: cuts.append(cut_of(*a)) or cuts[-1])
    with torch_threads(1):
        one = _render(f, o, d)[1]
    with torch_threads(2):
        two = _render(f, o, d)[1]
    assert len(cuts) == 1 and 0 < cuts[0] < o.shape[0] - 2
    for name, a, b in zip(PARAMS, two, one):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max())), name


def test_ray_cut_halves_the_cost() -> None:
    gen = torch.Generator().manual_seed(0)
    looked = torch.randint(0, 300, (500,), generator=gen)
    stats = torch.stack([looked, looked // 3], 1)  # (n, 2) looked up, shaded
    per = [(march.DENSITY_COST[i] + march.FEATURE_COST[i]) for i in range(2)]
    cost = per[0] * stats[:, 0].double() + per[1] * stats[:, 1].double()  # (n,)
    order = torch.randperm(500, generator=gen)
    for walk in (None, order):
        c = cost if walk is None else cost[walk]
        cut = march._ray_cut(stats, walk)
        assert abs(float(c[:cut].sum() - c[cut:].sum())) <= 2 * float(c.max())


def test_pack_and_unpack_over_a_box() -> None:
    n = 12
    gen = torch.Generator().manual_seed(0)
    dens, feats = torch.randn(1, n, n, n, generator=gen), torch.randn(3, n, n, n, generator=gen)
    box = torch.tensor([2, 0, 1, 9, 11, 10])  # z runs of 10: 8 nodes at once, then 2 one by one
    sel = (slice(2, 10), slice(0, 12), slice(1, 11))
    recs = records.pack(dens, feats, box).view(n, n, n, 4)
    assert torch.equal(recs[sel][..., 0], dens[0][sel])
    assert torch.equal(recs[sel][..., 1:].permute(3, 0, 1, 2), feats[(slice(None), *sel)])
    records.release(recs)
    a, b = records.take_gradients(n), records.take_gradients(n)
    ga, gb = torch.randn(4 * n**3, generator=gen), torch.randn(4 * n**3, generator=gen)
    inside = torch.zeros(n, n, n, 4, dtype=torch.bool)
    inside[sel] = True
    a.copy_(torch.where(inside.view(-1), ga, 0.0))  # a backward adds only inside its box
    b.copy_(torch.where(inside.view(-1), gb, 0.0))
    g_dens, g_feats = torch.full((1, n, n, n), 7.0), torch.full((3, n, n, n), 7.0)
    records.unpack([a, b], n, box, g_dens, g_feats)
    total = torch.where(inside, (ga + gb).view(n, n, n, 4), 0.0)  # the sum inside, zeros outside
    assert torch.equal(g_dens[0], total[..., 0])
    assert torch.equal(g_feats, total[..., 1:].permute(3, 0, 1, 2))
    assert not a.any() and not b.any()  # handed back zeroed
    again = {records.take_gradients(n).data_ptr() for _ in range(2)}
    assert again == {a.data_ptr(), b.data_ptr()}


def test_a_backward_leaves_its_gradient_records_zeroed(monkeypatch: pytest.MonkeyPatch) -> None:
    f = _field("random", "identity", torch.float32)
    o, d = _rays()
    monkeypatch.setattr(records, "MIN_SHADED_PER_NODE", 0.0)
    taken = []
    take = records.take_gradients
    monkeypatch.setattr(records, "take_gradients", lambda n: taken.append(take(n)) or taken[-1])
    for threads in (1, 2):  # one buffer, then one a thread
        with torch_threads(threads):
            _render(f, o, d)
        assert len(taken) == threads and not any(t.any() for t in taken)
        assert {take(f.grid_size).data_ptr() for _ in taken} == {t.data_ptr() for t in taken}  # back in the pool
        for t in taken:
            records._POOL.give(t, zeroed=True)
        taken.clear()


def test_records_are_chosen_where_they_pay() -> None:
    """Records where the last render's share of shaded samples promises enough of them (nothing known: the planes);
    a render nobody differentiates needs a quarter as many; with an occupancy grid only its occupied cells' box."""
    n = 64
    f = VoxelField(n, 3)
    samples = 150_000.0  # 0.57 a node
    assert records.records_box(f, samples, True) is None  # a first render
    records.note_shaded(f, 150_000, samples)  # a random field: every sample shaded
    assert records.records_box(f, samples, True).tolist() == [0, 0, 0, n - 1, n - 1, n - 1]
    assert records.records_box(f, samples / 2, True) is None  # 0.29 a node
    assert records.records_box(f, samples / 2, False) is not None  # no backward: 0.1 a node suffice
    records.note_shaded(f, 20_000, samples)  # a converged object: most samples only looked up
    assert records.records_box(f, samples, True) is None
    assert not records.gradients_pay(n, torch.tensor([[150_000, 20_000]]))
    assert records.gradients_pay(n, torch.tensor([[150_000, 110_000]]))
    with torch.no_grad():
        r = f.grid_points().norm(dim=-1)
        f.density[0] = torch.where(r < 0.5, 30.0, -10.0)
    f.refresh_occupancy(0.5 * f.voxel_size)
    records.note_shaded(f, 150_000, samples)
    box = records.records_box(f, samples, True)
    cells, cell = f.occupancy_grid.bits.nonzero(), f.occupancy_grid.cell
    lo, hi = cells.amin(0) * cell, ((cells.amax(0) + 1) * cell).clamp(max=n - 1)
    assert box.tolist() == [*lo.tolist(), *hi.tolist()] and 0 < int(lo.min()) and int(hi.max()) < n - 1
    f.occupancy_grid.bits.zero_()
    assert records.records_box(f, samples, True) is None  # nothing occupied: nothing to look up
    for other in (VoxelField(16, 4), VoxelField(16, 3).double()):  # 4 channels, float64: the planes
        records.note_shaded(other, 150_000, samples)
        assert records.records_box(other, samples, True) is None
