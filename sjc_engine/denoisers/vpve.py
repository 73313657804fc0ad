"""VP -> VE: use a variance-preserving (DDPM) epsilon model as a variance-exploding denoiser ``D(x, sigma)``.

A DDPM sample ``x_t = sqrt(abar_t) y + sqrt(1 - abar_t) eps`` is, divided by ``sqrt(abar_t)``, the VE sample
``x = y + sigma_t eps`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``. So for a VE input ``x`` at level
``sigma`` the model sees ``x / sqrt(1 + sigma^2)`` (since ``abar = 1 / (1 + sigma^2)``) at the tick ``t``
whose ``sigma_t`` is nearest, and ``D(x, sigma) = x - sigma * eps``. This is pals-ttic/sjc ``adapt_sd.py``.

The tick table is computed in float64 from the scheduler's config (``linear`` and ``scaled_linear`` betas,
``trained_betas``), as the reference does: diffusers keeps ``alphas_cumprod`` in float32, whose sigmas are up to
1.3e-5 relative off (ours: 2e-16), enough to move ``D`` by up to 1.9e-4 at guidance 100 (issue 12). Other
schedules keep diffusers' table.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def alphas_cumprod_float64(scheduler: Any) -> Tensor:
    """``abar_t = prod_{s<=t} (1 - beta_s)``, (T,) float64, from the scheduler's config.

    ``linear``: ``beta = linspace(beta_start, beta_end, T)``; ``scaled_linear`` (Stable Diffusion):
    ``beta = linspace(sqrt(beta_start), sqrt(beta_end), T)^2``; ``trained_betas`` as given. Any other schedule
    (``squaredcos_cap_v2``, zero-terminal-SNR rescaling, ...) uses the scheduler's own ``alphas_cumprod``.
    """
    cfg = getattr(scheduler, "config", {}) or {}
    get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    kind = get("beta_schedule", None)
    trained = get("trained_betas", None)
    if get("rescale_betas_zero_snr", False) or (trained is None and kind not in ("linear", "scaled_linear")):
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod; use a DDPM-family scheduler")
        return torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64).cpu()
    n = int(get("num_train_timesteps", 1000))
    if trained is not None:
        betas = torch.as_tensor(trained, dtype=torch.float64)
    elif kind == "linear":
        betas = torch.linspace(float(get("beta_start")), float(get("beta_end")), n, dtype=torch.float64)
    else:
        betas = torch.linspace(float(get("beta_start")) ** 0.5, float(get("beta_end")) ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


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
    """The VE sigma table of a diffusers scheduler, (T,) float64 (see :func:`alphas_cumprod_float64`)."""
    return sigmas_from_alphas_cumprod(alphas_cumprod_float64(scheduler))


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
