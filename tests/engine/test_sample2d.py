"""2D PAAS sampling (theta = the image) with analytic oracles and a tiny real model."""

import torch

from sjc_engine.callbacks import Callbacks
from sjc_engine.denoisers.gaussian import EmpiricalDenoiser, GaussianDenoiser
from sjc_engine.denoisers.loader import load_denoiser
from sjc_engine.sample2d import Sample2DConfig, sample2d


def test_gaussian_sample_moves_to_the_data():
    mu = torch.linspace(-0.8, 0.8, 3 * 8 * 8).view(3, 8, 8)
    den = GaussianDenoiser(mu, var=0.01)
    cfg = Sample2DConfig(steps=300, sigma_min=0.02, sigma_max=5.0, lr=0.02, n_noise=4)
    res = sample2d(den, cfg)
    start = (torch.zeros(1, 3, 8, 8) - mu).pow(2).mean().sqrt()
    end = (res.image - mu).pow(2).mean().sqrt()
    assert end < 0.2 * start, (float(start), float(end))
    assert res.rgb.shape == (8, 8, 3) and res.rgb.dtype.name == "uint8" and res.step == 300 and not res.stopped


def test_empirical_sample_lands_near_a_data_point():
    g = torch.Generator().manual_seed(0)
    data = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1  # (N, C, H, W)
    den = EmpiricalDenoiser(data)
    cfg = Sample2DConfig(steps=300, sigma_min=0.02, sigma_max=5.0, lr=0.03, init="noise", seed=1, n_noise=2)
    res = sample2d(den, cfg)
    dist = (res.image - data).flatten(1).pow(2).mean(1).sqrt()  # (N,)
    start = (torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1 - data).flatten(1).pow(2).mean(1).sqrt()
    assert dist.min() < 0.1 < 0.4 < start.min(), (dist, start)


def test_random_schedule_and_reproducible():
    mu = torch.zeros(3, 4, 4) + 0.5
    den = GaussianDenoiser(mu, var=0.05)
    cfg = Sample2DConfig(steps=20, sigma_schedule="random", sigma_min=0.05, sigma_max=2.0, seed=3)
    a, b = sample2d(den, cfg), sample2d(den, cfg)
    assert torch.equal(a.image, b.image)


class StopAfter(Callbacks):
    def __init__(self, n):
        self.n, self.steps = n, 0

    def on_step(self, report):
        self.steps = report.step

    def should_stop(self):
        return self.steps >= self.n


def test_cancel_and_tiny_real_model(tiny_pixel_dir):
    den = load_denoiser(str(tiny_pixel_dir), device="cpu")
    cb = StopAfter(3)
    res = sample2d(den, Sample2DConfig(prompt="a red cube", steps=50), callbacks=cb)
    assert res.stopped and res.step == 3 and res.image.shape == (1, 3, 16, 16)
    assert torch.isfinite(res.image).all() and res.image.abs().sum() > 0
