"""Filling a field's enclosed cavities (:mod:`sjc_engine.cavities`) and its use at the end of the SJC loop."""

from __future__ import annotations

import pytest
import torch

from sjc_engine.callbacks import Callbacks
from sjc_engine.cavities import fill_cavities
from sjc_engine.config import SJCConfig
from sjc_engine.denoisers.gaussian import GaussianDenoiser
from sjc_engine.field import VoxelField
from sjc_engine.optimize import run_sjc

N = 17  # nodes at -1, -0.875, ..., 1


def _radius(field: VoxelField) -> torch.Tensor:
    return field.grid_points().norm(dim=-1)  # (N, N, N)


def hollow_ball(shell_raw: torch.Tensor | float = 12.0) -> VoxelField:
    """A shell (0.35 < |x| < 0.6) of raw density shell_raw around an empty core; random features."""
    torch.manual_seed(0)
    field = VoxelField(N, 3, density_shift=-5.0)
    r = _radius(field)
    with torch.no_grad():
        field.density[0] = torch.where((r > 0.35) & (r < 0.6), torch.as_tensor(shell_raw), torch.tensor(-4.0))
        field.features.normal_()
    return field


def test_a_shell_is_filled_to_the_median_of_its_density_with_its_nearest_features():
    field = hollow_ball(12.0 + torch.linspace(0, 1, N**3).reshape(N, N, N))  # shell values differ: a median to take
    before = field.density.detach().clone()
    feats = field.features.detach().clone()
    occ = field.occupancy(5.0)
    core = _radius(field) <= 0.35
    filled = fill_cavities(field, 5.0)
    assert filled == int(core.sum()) > 0
    d = field.density.detach()[0]
    assert torch.equal(d[core], torch.full_like(d[core], float(before[0][occ].median())))
    assert torch.equal(d[~core], before[0][~core])  # the shell and the outside untouched
    assert bool(field.occupancy(5.0)[core].all())
    idx = torch.stack(torch.meshgrid(*[torch.arange(N)] * 3, indexing="ij"), -1).float()  # (N, N, N, 3)
    for node in core.nonzero()[::7]:  # each cavity node has the features of an occupied node nearest to it
        dist = (idx[occ] - node.float()).norm(dim=-1)  # (occupied,)
        nearest = [feats[:, i, j, k] for i, j, k in occ.nonzero()[dist == dist.min()]]
        assert any(torch.equal(field.features.detach()[:, node[0], node[1], node[2]], f) for f in nearest)
    outside = _radius(field) > 0.35
    assert torch.equal(field.features.detach()[:, outside], feats[:, outside])


def test_every_cavity_node_gets_the_level_whatever_it_held():
    field = hollow_ball()
    c = N // 2
    with torch.no_grad():
        field.density[0, c, c, c] = 3.0  # empty (activated ~0.13) but not the lowest
        field.density[0, c + 1, c, c] = 5.0  # activated 0.69, just under the threshold
    fill_cavities(field, 5.0)
    core = _radius(field) <= 0.35
    assert torch.equal(field.density.detach()[0][core], torch.full((int(core.sum()),), 12.0))


def test_an_open_ring_and_an_empty_field_are_left_alone():
    field = VoxelField(N, 3, density_shift=-5.0)
    p = field.grid_points()  # a torus lying flat: its hole reaches the border through the empty space above it
    ring = ((p[..., [0, 2]].norm(dim=-1) - 0.5) ** 2 + p[..., 1] ** 2).sqrt() < 0.2
    with torch.no_grad():
        field.density[0] = torch.where(ring, 12.0, -4.0)
    before = field.density.detach().clone()
    assert fill_cavities(field, 5.0) == 0
    assert torch.equal(field.density.detach(), before)
    assert fill_cavities(VoxelField(N, 3, density_shift=-5.0), 5.0) == 0


@pytest.mark.parametrize("fill", [False, True])
def test_the_loop_fills_after_its_last_step_before_the_last_checkpoint(fill):
    den = GaussianDenoiser(torch.full((3, 12, 12), 0.5), var=0.01)
    cfg = SJCConfig(prompt="a red cube", steps=2, grid_size=N, render_size=12, sigma_min=0.05, sigma_max=2.0,
                    lr=1e-9, bg_lr=1e-9, preview_every=0, checkpoint_every=1, device="cpu", seed=0,
                    density_shift=-5.0, mesh_threshold=5.0, fill_cavities=fill)
    states: list = []

    class Keep(Callbacks):
        def on_checkpoint(self, state, step):
            states.append((step, state))

    cb = Keep()
    out = run_sjc(cfg, den, callbacks=cb, field=hollow_ball()).field
    core = _radius(out) <= 0.35
    assert bool(out.occupancy(5.0)[core].all()) == fill
    assert [step for step, _ in states] == [1, 2]
    first, last = states[0][1]["field"]["density"][0], states[1][1]["field"]["density"][0]
    assert not bool((first[core] > 0).any())  # not before the last step
    assert torch.equal(last, out.density.detach()[0])  # the last checkpoint holds the filled field
