"""Several views per SJC step (``SJCConfig.views``): one batched denoiser call, each view scored as if alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sjc_engine.cameras import spherical_camera
from sjc_engine.config import ConfigError, SJCConfig
from sjc_engine.denoisers.gaussian import GaussianDenoiser
from sjc_engine.optimize import run_sjc
from sjc_engine.renderer import render_image


@pytest.fixture(scope="module")
def embedded():
    from sjc_engine.denoisers.loader import load_denoiser

    return load_denoiser("embedded", device="cpu", half=False)


@pytest.mark.parametrize("guidance", [1.0, 10.0])
def test_batched_prompts_denoise_like_one_call_per_view(embedded, guidance):
    prompts = ["front view of a red cube", "side view of a red cube", "overhead view of a red cube"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 3, 32, 32, generator=g)  # (n, V, C, H, W): two noise groups of three views
    batched = embedded.denoise(x.reshape(6, 3, 32, 32), 0.6, cond=embedded.encode_prompts(prompts), guidance_scale=guidance)
    for k in range(2):
        for v, p in enumerate(prompts):
            alone = embedded.denoise(x[k, v : v + 1], 0.6, cond=embedded.encode_prompt(p), guidance_scale=guidance)
            torch.testing.assert_close(batched[3 * k + v : 3 * k + v + 1], alone, rtol=1e-4, atol=1e-4)
    # the prompt matters: the same images under one prompt differ
    one = embedded.denoise(x.reshape(6, 3, 32, 32), 0.6, cond=embedded.encode_prompt(prompts[0]), guidance_scale=guidance)
    assert (one[1] - batched[1]).abs().max() > 1e-3


def test_a_batch_that_does_not_fit_the_prompts_is_refused(embedded):
    cond = embedded.encode_prompts(["front view of a red cube", "side view of a red cube"])
    with pytest.raises(ValueError, match="cannot take"):
        embedded.denoise(torch.zeros(3, 3, 32, 32), 0.5, cond=cond, guidance_scale=10.0)


def test_views_setting_is_checked():
    with pytest.raises(ConfigError) as e:
        SJCConfig(views=0)
    assert e.value.field == "views"


def _colour_error(field, value=0.5):
    cam = spherical_camera(0.0, 10.0, 1.5, 60.0, 12)
    with torch.no_grad():
        return float((render_image(field, cam).image - value).abs().mean())


def test_more_views_learn_more_per_step():
    """Against an oracle whose every image is grey 0.5: 4 views a step fit the colour faster per step than 1."""
    den = GaussianDenoiser(torch.full((3, 12, 12), 0.5), var=0.01)
    cfg = SJCConfig(prompt="a red cube", steps=6, grid_size=10, render_size=12, sigma_min=0.05, sigma_max=2.0,
                    emptiness_weight=0.0, lr=0.05, preview_every=0, checkpoint_every=0, device="cpu", seed=0)
    start = _colour_error(run_sjc(dataclasses.replace(cfg, steps=1, lr=1e-9), den).field)
    one = _colour_error(run_sjc(cfg, den).field)
    four = _colour_error(run_sjc(dataclasses.replace(cfg, views=4), den).field)
    assert four < one < start, (start, one, four)


def test_views_losses_are_means_over_the_views():
    """The emptiness loss of a step is the mean over its views, drawn in order from the seeded camera generator."""
    import copy

    import numpy as np

    from sjc_engine.callbacks import Callbacks
    from sjc_engine.cameras import sample_camera
    from sjc_engine.field import VoxelField
    from sjc_engine.losses import emptiness_loss

    den = GaussianDenoiser(torch.full((3, 12, 12), 0.5), var=0.01)
    cfg = SJCConfig(prompt="a red cube", steps=1, grid_size=10, render_size=12, sigma_min=0.05, sigma_max=2.0,
                    emptiness_weight=1.0, preview_every=0, checkpoint_every=0, device="cpu", seed=3, views=3)
    torch.manual_seed(1)
    start = VoxelField(10, 3)
    with torch.no_grad():
        start.density.normal_(0.0, 2.0)
    reported = {}

    class Last(Callbacks):
        def on_step(self, report):
            reported.update(report.losses)

    run_sjc(cfg, den, callbacks=Last(), field=copy.deepcopy(start), occupancy=None)
    rng = np.random.default_rng(3)
    cams = [sample_camera(rng, 12, cfg.cam_radius, cfg.elev_range_deg, cfg.fov_range_deg) for _ in range(3)]
    with torch.no_grad():
        each = [float(emptiness_loss(render_image(start, c, cfg.step_ratio).weights, cfg.emptiness_scale)) for c in cams]
    assert len(set(round(e, 6) for e in each)) == 3  # three different views
    assert reported["emptiness"] == pytest.approx(sum(each) / 3, rel=1e-5)
