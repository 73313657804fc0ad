"""VP -> VE: use a variance-preserving (DDPM) epsilon model as a variance-exploding denoiser ``D(x, sigma)``.

A DDPM sample ``x_t = sqrt(abar_t) y + sqrt(1 - abar_t) eps`` is, divided by ``sqrt(abar_t)``, the VE sample
``x = y + sigma_t eps`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``. So for a VE input ``x`` at level
``sigma`` the model sees ``x / sqrt(1 + sigma^2)`` (since ``abar = 1 / (1 + sigma^2)``) at the tick ``t``
whose ``sigma_t`` is nearest, and ``D(x, sigma) = x - sigma * eps``. This is pals-ttic/sjc ``adapt_sd.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def sigmas_from_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    """VE noise level of every tick, ``sqrt((1 - abar_t) / abar_t)``, shape (T,), float64, ascending with t."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if abar.ndim != 1 or not bool(((abar > 0) & (abar <= 1)).all()):
        raise ValueError("alphas_cumprod must be a 1-D table with values in (0, 1]")
    sigmas = torch.sqrt((1.0 - abar) / abar)
    if not bool((sigmas[1:] >= sigmas[:-1]).all()):
        raise ValueError("alphas_cumprod must be non-increasing in t (sigmas ascending)")
    return sigmas


def sigmas_from_scheduler(scheduler: Any) -> Tensor:
    """The VE sigma table of a diffusers scheduler (anything with ``alphas_cumprod``), (T,) float64."""
    if not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod; use a DDPM-family scheduler")
    return sigmas_from_alphas_cumprod(scheduler.alphas_cumprod)


def nearest_tick(sigmas: Tensor, sigma: float) -> tuple[int, float]:
    """The tick ``t`` whose ``sigmas[t]`` is closest to ``sigma``, and that snapped sigma."""
    t = int(torch.argmin((sigmas - float(sigma)).abs()))
    return t, float(sigmas[t])


def scale_input(x: Tensor, sigma: float) -> Tensor:
    """The VP model input for a VE sample: ``x / sqrt(1 + sigma^2)``."""
    return x / math.sqrt(1.0 + sigma * sigma)


def v_to_eps(x_scaled: Tensor, v: Tensor, alpha_cumprod: float) -> Tensor:
    """Epsilon from a v-prediction: ``eps = sqrt(abar) v + sqrt(1 - abar) x_t`` with ``x_t`` the VP input."""
    return math.sqrt(alpha_cumprod) * v + math.sqrt(1.0 - alpha_cumprod) * x_scaled


def eps_to_denoised(x: Tensor, sigma: float, eps: Tensor) -> Tensor:
    """The VE denoiser output ``D = x - sigma * eps``."""
    return x - sigma * eps
