"""VP -> VE conversion: the float64 sigma table, nearest-tick lookup, and D = x - sigma * eps."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler

from sjc_engine.denoisers.vpve import (
    alphas_cumprod_float64, eps_to_denoised, nearest_tick, scale_input, sigmas_from_alphas_cumprod, sigmas_from_scheduler, v_to_eps,
)

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def reference_sigmas(beta_start: float, beta_end: float, n: int, kind: str) -> np.ndarray:
    """pals-ttic/sjc's table restated in numpy float64: betas, abar = cumprod(1 - beta), sqrt((1 - abar) / abar)."""
    if kind == "scaled_linear":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, n, dtype=np.float64) ** 2
    else:
        betas = np.linspace(beta_start, beta_end, n, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - abar) / abar)


@pytest.mark.parametrize("cls", [DDPMScheduler, PNDMScheduler, DDIMScheduler])
def test_sd_sigma_table_is_float64_reference(cls):
    sched = cls(**SD)
    sig = sigmas_from_scheduler(sched)
    assert sig.shape == (1000,) and sig.dtype == torch.float64 and sig.device.type == "cpu"
    ref = reference_sigmas(0.00085, 0.012, 1000, "scaled_linear")
    rel = np.abs(sig.numpy() - ref) / ref
    assert rel.max() < 1e-13
    # diffusers' float32 table is measurably off (the reason for computing our own)
    off = sigmas_from_alphas_cumprod(sched.alphas_cumprod)
    assert (np.abs(off.numpy() - ref) / ref).max() > 1e-6
    assert sig[-1].item() == pytest.approx(14.6146, abs=1e-3)
    assert sig[0].item() == pytest.approx(0.02917, abs=1e-4)
    assert bool((sig[1:] > sig[:-1]).all())
    # the reference trims us[30:-10] of its descending table: sigma in about [0.098, 12.23]
    assert sig[10].item() == pytest.approx(0.0983, abs=1e-3)
    assert sig[969].item() == pytest.approx(12.229, abs=1e-2)


def test_linear_schedule_and_trained_betas_in_float64():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    ref = reference_sigmas(1e-4, 0.02, 1000, "linear")
    assert (np.abs(sigmas_from_scheduler(sched).numpy() - ref) / ref).max() < 1e-13
    betas = np.linspace(1e-4, 0.03, 50)
    trained = DDPMScheduler(num_train_timesteps=50, trained_betas=betas.tolist())
    np.testing.assert_allclose(alphas_cumprod_float64(trained).numpy(), np.cumprod(1 - betas), rtol=1e-15)


def test_other_schedules_keep_the_scheduler_table():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(alphas_cumprod_float64(sched), sched.alphas_cumprod.double())


def test_reference_formula():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(sigmas_from_alphas_cumprod(abar), torch.sqrt((1 - abar) / abar))


def test_bad_tables_fail():
    with pytest.raises(ValueError):
        sigmas_from_alphas_cumprod(torch.tensor([0.5, 0.9]))  # increasing abar
    with pytest.raises(ValueError):
        sigmas_from_alphas_cumprod(torch.tensor([1.5, 0.9]))


def test_nearest_tick():
    sig = sigmas_from_scheduler(DDPMScheduler(**SD))
    t, s = nearest_tick(sig, 1.0)
    assert abs(s - 1.0) == pytest.approx((sig - 1.0).abs().min().item())
    assert s == pytest.approx(sig[t].item())
    assert nearest_tick(sig, 1e6)[0] == 999 and nearest_tick(sig, 0.0)[0] == 0
    assert nearest_tick(sig, float(sig[123]))[0] == 123


def test_scaling_and_denoised():
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(scale_input(x, 3.0), x / math.sqrt(10.0))
    eps = torch.randn_like(x)
    assert torch.allclose(eps_to_denoised(x, 2.0, eps), x - 2.0 * eps)


def test_v_to_eps_recovers_eps():
    abar = 0.3
    y, eps = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    x_t = math.sqrt(abar) * y + math.sqrt(1 - abar) * eps  # the VP sample
    v = math.sqrt(abar) * eps - math.sqrt(1 - abar) * y
    torch.testing.assert_close(v_to_eps(x_t, v, abar), eps)
    # VE view: x = x_t / sqrt(abar) = y + sigma eps, and D = x - sigma eps = y
    sigma = math.sqrt((1 - abar) / abar)
    x = x_t / math.sqrt(abar)
    torch.testing.assert_close(scale_input(x, sigma), x_t)
    torch.testing.assert_close(eps_to_denoised(x, sigma, eps), y)
