"""PAAS against its closed form on Gaussian data N(mu, v I): E[grad] = -sigma (y - mu) / (v + sigma^2)."""

import pytest
import torch

from sjc_engine.denoisers.gaussian import EmpiricalDenoiser, GaussianDenoiser
from sjc_engine.paas import paas_grad, paas_score


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(3, 4, 4, generator=g)
    y = torch.randn(1, 3, 4, 4, generator=g)
    return GaussianDenoiser(mu, var=0.2), mu, y


def closed_form(mu, var, y, sigma):
    return -sigma * (y - mu) / (var + sigma**2)


@pytest.mark.parametrize("var_red", [True, False])
def test_paas_exact_with_antithetic_noise(var_red):
    den, mu, y = _setup()
    n = torch.randn(4, 3, 4, 4)
    noise = torch.cat([n, -n])  # mean exactly zero, so the linear denoiser gives the expectation exactly
    for sigma in (0.1, 1.0, 5.0):
        out = paas_grad(den, y, sigma, noise=noise, var_red=var_red)
        torch.testing.assert_close(out.grad, closed_form(mu, 0.2, y, sigma), rtol=1e-5, atol=1e-5)
        assert out.denoised.shape == (8, 3, 4, 4) and out.noised.shape == (8, 3, 4, 4)


def test_paas_single_sample_formula():
    den, mu, y = _setup()
    n = torch.randn(1, 3, 4, 4)
    sigma = 0.7
    z = y + sigma * n
    d = mu + 0.2 / (0.2 + sigma**2) * (z - mu)
    torch.testing.assert_close(paas_grad(den, y, sigma, noise=n, var_red=True).grad, (d - y) / sigma)
    torch.testing.assert_close(paas_grad(den, y, sigma, noise=n, var_red=False).grad, (d - z) / sigma)


@pytest.mark.parametrize("var_red", [True, False])
def test_paas_in_expectation(var_red):
    den, mu, y = _setup(1)
    sigma = 1.5
    g = torch.Generator().manual_seed(3)
    out = paas_grad(den, y, sigma, n_noise=20000, var_red=var_red, generator=g)
    expected = closed_form(mu, 0.2, y, sigma)
    # Monte Carlo error: std of one sample / sqrt(n)
    per_sample_std = (0.2 / (0.2 + sigma**2)) if var_red else sigma / (0.2 + sigma**2)
    assert (out.grad - expected).abs().max() < 5 * per_sample_std / 20000**0.5 + 1e-4
    # the score form: PAAS(y) = E[(D - y) / sigma^2] = -(y - mu) / (v + sigma^2)
    score = paas_score(den, y, sigma, n_noise=20000, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(score, -(y - mu) / (0.2 + sigma**2), atol=0.02, rtol=0.02)


def test_var_red_reduces_variance():
    den, _, y = _setup(2)
    g = torch.Generator().manual_seed(0)
    a = torch.stack([paas_grad(den, y, 2.0, var_red=True, generator=g).grad for _ in range(200)])
    g = torch.Generator().manual_seed(0)
    b = torch.stack([paas_grad(den, y, 2.0, var_red=False, generator=g).grad for _ in range(200)])
    assert a.var(0).mean() < 0.1 * b.var(0).mean()


def test_empirical_denoiser_is_posterior_mean():
    data = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0)])  # (2, 1, 2, 2)
    den = EmpiricalDenoiser(data)
    x = torch.full((1, 1, 2, 2), 0.3)
    s = 0.8
    # two points: posterior odds exp(-(|x-y1|^2 - |x-y0|^2) / 2 s^2) with |.|^2 summed over 4 pixels
    w1 = torch.sigmoid(torch.tensor(4 * ((0.3 + 1) ** 2 - (0.3 - 1) ** 2) / (2 * s * s)))
    expected = w1 * 1.0 + (1 - w1) * -1.0
    torch.testing.assert_close(den.denoise(x, s), torch.full_like(x, expected.item()))
    assert torch.allclose(den.denoise(x, 1e-3), torch.ones_like(x), atol=1e-4)  # tiny noise: nearest point


def test_bad_inputs():
    den, _, y = _setup()
    with pytest.raises(ValueError):
        paas_grad(den, y[0], 1.0)  # (C, H, W): not a batch of images
    with pytest.raises(ValueError):
        paas_grad(den, y, 0.0)


@pytest.mark.parametrize("var_red", [True, False])
def test_views_batched_equal_one_call_per_view(var_red):
    """V views in one call give each view the gradient it gets alone with the same noise (n groups of V)."""
    den, _, y0 = _setup()
    views = torch.cat([y0, -0.5 * y0, y0 + 0.25])  # (3, C, H, W)
    noise = torch.randn(2, *views.shape, generator=torch.Generator().manual_seed(7))  # (n, V, C, H, W)
    out = paas_grad(den, views, 0.7, noise=noise, var_red=var_red)
    assert out.grad.shape == views.shape and out.denoised.shape == (6, *views.shape[1:])
    for v in range(3):
        alone = paas_grad(den, views[v : v + 1], 0.7, noise=noise[:, v], var_red=var_red)
        torch.testing.assert_close(out.grad[v : v + 1], alone.grad)
    # the noise drawn for V images is the noise a single image would draw first
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    one = paas_grad(den, views[:1], 0.7, generator=g())
    many = paas_grad(den, views, 0.7, generator=g())
    torch.testing.assert_close(many.noised[0], one.noised[0])
