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
        grad: (V, C, H, W) the image-space ascent direction of each of the V images, averaged over the noise samples.
        denoised: (n * V, C, H, W) ``D(z, sigma)`` of every noise sample (n groups of the V images).
        noised: (n * V, C, H, W) the perturbed inputs ``z = y + sigma n``.
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
    """The PAAS gradient on clean images (the V views of one step share ``sigma`` and one denoiser call).

    Args:
        denoiser: the VE denoiser ``D(x, sigma)``.
        y: (V, C, H, W) the clean renderings (detached inside; no graph is built); V = 1 in the reference.
        sigma: the perturbation level.
        cond: the denoiser's prompt conditioning of the V images (``denoiser.encode_prompt(p)`` for one,
            ``denoiser.encode_prompts([...])`` for several), or ``None``.
        guidance_scale: classifier-free guidance scale passed to the denoiser.
        n_noise: how many noise samples to average per image (all n * V batched into one denoiser call).
        var_red: ``(D - y)/sigma`` (True, the reference default) or ``(D - z)/sigma`` (False).
        generator: CPU torch generator for the noise (reproducible across devices); ``None`` uses the global RNG.
        noise: (n, C, H, W) (V = 1) or (n, V, C, H, W) explicit noise instead of sampling (tests, antithetic pairs).
    """
    if y.ndim != 4 or y.shape[0] < 1:
        raise ValueError(f"y must be images (V, C, H, W), got {tuple(y.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    y = y.detach()
    V = y.shape[0]
    if noise is None:
        noise = torch.randn((n_noise, *y.shape), generator=generator, dtype=torch.float32)  # (n, V, C, H, W)
    noise = noise.to(device=y.device, dtype=y.dtype).reshape(-1, *y.shape)  # (n, V, C, H, W)
    n = noise.shape[0]
    with torch.no_grad():
        z = (y + sigma * noise).reshape(n * V, *y.shape[1:])  # (n * V, C, H, W): n groups of the V images
        d = denoiser.denoise(z, sigma, cond=cond, guidance_scale=guidance_scale)  # (n * V, C, H, W)
        ref = y.repeat(n, 1, 1, 1) if var_red else z  # (n * V, C, H, W)
        grad = ((d - ref) / sigma).reshape(n, *y.shape).mean(0)  # (V, C, H, W)
    return PAASOutput(grad=grad, denoised=d, noised=z)


def paas_score(denoiser: Denoiser, y: Tensor, sigma: float, **kwargs: Any) -> Tensor:
    """The PAAS score estimate ``mean_n (D(y + sigma n, sigma) - y) / sigma^2``, (1, C, H, W)."""
    return paas_grad(denoiser, y, sigma, **kwargs).grad / sigma
