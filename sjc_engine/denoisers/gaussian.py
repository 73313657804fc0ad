"""Analytic denoisers: exact ``D(x, sigma)`` for data we know, used as oracles in tests.

- Gaussian data ``N(mu, v I)``: ``D(z, s) = mu + v / (v + s^2) (z - mu)``.
- An empirical set ``{y_i}``: ``D(z, s) = sum_i N(z; y_i, s^2) y_i / sum_i N(z; y_i, s^2)`` (the optimal denoiser).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sjc_engine.denoisers.base import Denoiser


def default_sigma_table(n: int = 1000, sigma_min: float = 0.01, sigma_max: float = 50.0) -> Tensor:
    """A dense geometric tick table (T,), float64 ascending, for denoisers with continuous sigma."""
    return torch.logspace(torch.log10(torch.tensor(sigma_min)), torch.log10(torch.tensor(sigma_max)), n, dtype=torch.float64)


class GaussianDenoiser(Denoiser):
    """The exact denoiser of ``N(mu, var I)`` data.

    Args:
        mu: the data mean, shape (C, H, W) (or broadcastable to it).
        var: the per-pixel data variance ``v``.
        sigmas: (T,) tick table; defaults to :func:`default_sigma_table`.
    """

    def __init__(self, mu: Tensor, var: float = 0.1, sigmas: Tensor | None = None) -> None:
        if mu.ndim != 3:
            raise ValueError(f"mu must be (C, H, W), got {tuple(mu.shape)}")
        self.mu = mu.float()
        self.var = float(var)
        self.channels = mu.shape[0]
        self.image_size = mu.shape[-1]
        self.sigmas = default_sigma_table() if sigmas is None else sigmas

    def denoise(self, x: Tensor, sigma: float, cond: Any = None, guidance_scale: float = 1.0) -> Tensor:
        mu = self.mu.to(x)
        return mu + self.var / (self.var + float(sigma) ** 2) * (x - mu)

    def score(self, x: Tensor, sigma: float) -> Tensor:
        """The true score of the noised data ``N(mu, (v + sigma^2) I)`` at ``x``."""
        return -(x - self.mu.to(x)) / (self.var + float(sigma) ** 2)


class EmpiricalDenoiser(Denoiser):
    """The optimal denoiser of a finite data set ``{y_i}`` (a posterior-weighted mean of the points).

    Args:
        data: (N, C, H, W) the data points.
        sigmas: (T,) tick table; defaults to :func:`default_sigma_table`.
    """

    def __init__(self, data: Tensor, sigmas: Tensor | None = None) -> None:
        if data.ndim != 4:
            raise ValueError(f"data must be (N, C, H, W), got {tuple(data.shape)}")
        self.data = data.float()
        self.channels = data.shape[1]
        self.image_size = data.shape[-1]
        self.sigmas = default_sigma_table() if sigmas is None else sigmas

    def posterior(self, x: Tensor, sigma: float) -> Tensor:
        """(B, N) weights of each data point given each noisy ``x`` (B, C, H, W)."""
        flat_x = x.float().flatten(1)  # (B, D)
        flat_y = self.data.to(x.device).flatten(1)  # (N, D)
        d2 = torch.cdist(flat_x, flat_y).pow(2)  # (B, N)
        return torch.softmax(-d2 / (2.0 * float(sigma) ** 2), dim=1)

    def denoise(self, x: Tensor, sigma: float, cond: Any = None, guidance_scale: float = 1.0) -> Tensor:
        w = self.posterior(x, sigma)  # (B, N)
        out = (w @ self.data.to(x.device).flatten(1)).view_as(x)  # (B, C, H, W)
        return out.to(x.dtype)
