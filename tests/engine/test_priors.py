"""The initial density blob (:mod:`sjc_engine.priors`) and its use by the SJC loop."""

from __future__ import annotations

import pytest
import torch

from sjc_engine.config import ConfigError, SJCConfig
from sjc_engine.denoisers.gaussian import GaussianDenoiser
from sjc_engine.field import VoxelField
from sjc_engine.optimize import run_sjc
from sjc_engine.priors import add_density_blob


def test_blob_falls_linearly_to_zero_at_its_radius():
    field = add_density_blob(VoxelField(9, 3), peak=8.0, radius=0.5)
    d = field.density.detach()[0]  # (9, 9, 9) nodes at -1, -0.75, ..., 1
    assert float(d[4, 4, 4]) == pytest.approx(8.0)
    assert float(d[5, 4, 4]) == pytest.approx(8.0 * (1 - 0.25 / 0.5))  # 0.25 from the centre: half way
    assert d[4, 6, 4] == 0.0 and d[0, 0, 0] == 0.0  # at and beyond the radius
    assert torch.equal(d, d.flip(0)) and torch.equal(d, d.permute(1, 0, 2))  # round, centred


def test_zero_peak_leaves_the_reference_start():
    torch.manual_seed(0)
    a = VoxelField(8, 3)
    before = a.density.clone()
    add_density_blob(a, 0.0, 0.5)
    assert torch.equal(a.density, before)
    with pytest.raises(ValueError):
        add_density_blob(a, 1.0, 0.0)


def test_loop_starts_a_fresh_field_with_the_blob():
    den = GaussianDenoiser(torch.full((3, 12, 12), 0.5), var=0.01)
    base = dict(prompt="a red cube", steps=1, grid_size=9, render_size=12, sigma_min=0.05, sigma_max=2.0,
                lr=1e-9, bg_lr=1e-9, preview_every=0, checkpoint_every=0, device="cpu", seed=0)
    plain = run_sjc(SJCConfig(**base), den).field
    blob = run_sjc(SJCConfig(**base, blob_density=8.0, blob_radius=0.5), den).field
    diff = (blob.density - plain.density).detach()[0]  # (9, 9, 9): the blob (one step of lr 1e-9 moves nothing visible)
    assert float(diff[4, 4, 4]) == pytest.approx(8.0, abs=1e-4) and diff[0, 0, 0].abs() < 1e-4


def test_blob_settings_are_checked():
    for name, value in (("blob_density", -1.0), ("blob_radius", 0.0), ("blob_decay", 1.5), ("blob_decay", -0.1)):
        with pytest.raises(ConfigError) as e:
            SJCConfig(**{name: value})
        assert e.value.field == name


def test_blob_decays_out_of_the_density_over_its_share_of_the_run():
    den = GaussianDenoiser(torch.full((3, 12, 12), 0.5), var=0.01)
    base = dict(prompt="a red cube", steps=4, grid_size=9, render_size=12, sigma_min=0.05, sigma_max=2.0,
                lr=1e-9, bg_lr=1e-9, preview_every=0, checkpoint_every=0, device="cpu", seed=0)
    plain = run_sjc(SJCConfig(**base), den).field.density.detach()
    kept = run_sjc(SJCConfig(**base, blob_density=8.0), den).field.density.detach()
    half = run_sjc(SJCConfig(**base, blob_density=8.0, blob_decay=0.5), den).field.density.detach()
    gone = run_sjc(SJCConfig(**base, blob_density=8.0, blob_decay=1.0), den).field.density.detach()
    # (lr 1e-9: the optimiser moves nothing visible, so the differences are the blob's share left)
    assert float((kept - plain)[0, 4, 4, 4]) == pytest.approx(8.0, abs=1e-4)
    assert float((half - plain)[0, 4, 4, 4]) == pytest.approx(0.0, abs=1e-4)  # gone after 2 of 4 steps
    assert torch.allclose(gone, plain, atol=1e-4)
    one_step = run_sjc(SJCConfig(**{**base, "steps": 1}, blob_density=8.0, blob_decay=1.0), den).field.density.detach()
    assert float(one_step[0, 4, 4, 4] - plain[0, 4, 4, 4]) == pytest.approx(0.0, abs=1e-4)  # all of it in its one step


def test_blob_decay_of_a_given_field_is_left_alone():
    den = GaussianDenoiser(torch.full((3, 12, 12), 0.5), var=0.01)
    cfg = SJCConfig(prompt="a red cube", steps=2, grid_size=9, render_size=12, sigma_min=0.05, sigma_max=2.0,
                    lr=1e-9, bg_lr=1e-9, preview_every=0, checkpoint_every=0, device="cpu", seed=0,
                    blob_density=8.0, blob_decay=1.0)
    start = add_density_blob(VoxelField(9, 3, density_shift=cfg.density_shift), 8.0, 0.5)
    out = run_sjc(cfg, den, field=start).field.density.detach()
    assert float(out[0, 4, 4, 4]) == pytest.approx(8.0, abs=1e-4)  # not the config's blob to take back
