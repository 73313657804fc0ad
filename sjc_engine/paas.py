"""Perturb-and-Average Scoring (PAAS): a score for a clean rendering, from a denoiser trained on noisy images.

A rendering ``y`` is never noisy, so ``D(y, sigma)`` is out of distribution. PAAS perturbs it first and
averages over noise ``n ~ N(0, I)``::

    PAAS(y, sqrt(2) sigma) = E_n[ (D(y + sigma n, sigma) - y) / sigma^2 ]

The optimiser uses the reference's (pals-ttic/sjc ``run_sjc.py``) per-step image gradient, ``sigma`` times that::

    var_red=True  (default):  grad = mean_n (D(z, sigma) - y) / sigma
    var_red=False:            grad = mean_n (D(z, sigma) - z) / sigma,   z = y + sigma n

Both have the same expectation (``E[n] = 0``); the first drops the ``-n`` term and its variance. ``grad`` points
uphill in log-density, so the 3D update is the vector-Jacobian product ``y.backward(-grad)``.

For Gaussian data ``N(mu, v I)`` the expectation is exact: ``E[grad] = -sigma (y - mu) / (v + sigma^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sjc_engine.denoisers.base import Denoiser


@dataclass
class PAASOutput:
    """One PAAS evaluation.

    Attributes:
        grad: (1, C, H, W) the image-space ascent direction, averaged over the noise samples.
        denoised: (n, C, H, W) ``D(z, sigma)`` of every noise sample.
        noised: (n, C, H, W) the perturbed inputs ``z = y + sigma n``.
    """

    grad: Tensor
    denoised: Tensor
    noised: Tensor


def paas_grad(
    denoiser: Denoiser,
    y: Tensor,
    sigma: float,
    cond: Any = None,
    guidance_scale: float = 1.0,
    n_noise: int = 1,
    var_red: bool = True,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> PAASOutput:
    """The PAAS gradient on a clean image.

    Args:
        denoiser: the VE denoiser ``D(x, sigma)``.
        y: (1, C, H, W) the clean rendering (detached inside; no graph is built).
        sigma: the perturbation level.
        cond: the denoiser's prompt conditioning (``denoiser.encode_prompt(...)``), or ``None``.
        guidance_scale: classifier-free guidance scale passed to the denoiser.
        n_noise: how many noise samples to average (batched into one denoiser call).
        var_red: ``(D - y)/sigma`` (True, the reference default) or ``(D - z)/sigma`` (False).
        generator: CPU torch generator for the noise (reproducible across devices); ``None`` uses the global RNG.
        noise: (n, C, H, W) explicit noise instead of sampling (tests, antithetic pairs).
    """
    if y.ndim != 4 or y.shape[0] != 1:
        raise ValueError(f"y must be one image (1, C, H, W), got {tuple(y.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    y = y.detach()
    if noise is None:
        noise = torch.randn((n_noise, *y.shape[1:]), generator=generator, dtype=torch.float32)  # (n, C, H, W)
    noise = noise.to(device=y.device, dtype=y.dtype)
    with torch.no_grad():
        z = y + sigma * noise  # (n, C, H, W)
        d = denoiser.denoise(z, sigma, cond=cond, guidance_scale=guidance_scale)  # (n, C, H, W)
        ref = y if var_red else z
        grad = ((d - ref) / sigma).mean(0, keepdim=True)  # (1, C, H, W)
    return PAASOutput(grad=grad, denoised=d, noised=z)


def paas_score(denoiser: Denoiser, y: Tensor, sigma: float, **kwargs: Any) -> Tensor:
    """The PAAS score estimate ``mean_n (D(y + sigma n, sigma) - y) / sigma^2``, (1, C, H, W)."""
    return paas_grad(denoiser, y, sigma, **kwargs).grad / sigma
