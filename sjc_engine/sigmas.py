"""Noise-level schedules: which sigma PAAS uses at each optimiser step.

- ``"random"`` (the reference): uniform over the denoiser's tick table, trimmed like pals-ttic/sjc's
  ``us[30:-10]`` (``us`` descending, so 30 ticks dropped at the high-sigma end and 10 at the low end: for
  Stable Diffusion sigma in about [0.098, 12.23]), or limited to ``[sigma_min, sigma_max]`` when given.
- ``"annealed"``: from the highest to the lowest allowed sigma over the run, geometric in between.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from sjc_engine.config import SJCConfig


def allowed_sigmas(
    sigmas: Tensor,
    tick_trim: tuple[int, int] = (30, 10),
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    """The ticks a schedule may use, (K,) ascending.

    Args:
        sigmas: (T,) the denoiser's sigma table, ascending.
        tick_trim: ``(high, low)``: ticks dropped at the high-sigma and the low-sigma end, as the reference's
            ``us[high:-low]`` on its descending table. Used when neither sigma bound is given.
        sigma_min, sigma_max: explicit bounds; either one replaces the trim.
    """
    if sigma_min is None and sigma_max is None:
        high, low = tick_trim
        kept = sigmas[low : len(sigmas) - high]
    else:
        lo = -math.inf if sigma_min is None else sigma_min
        hi = math.inf if sigma_max is None else sigma_max
        kept = sigmas[(sigmas >= lo) & (sigmas <= hi)]
    if len(kept) == 0:
        raise ValueError(
            f"no denoiser tick left in the sigma range (trim={tick_trim}, sigma_min={sigma_min}, "
            f"sigma_max={sigma_max}); the model's sigmas span [{float(sigmas[0]):.4g}, {float(sigmas[-1]):.4g}]"
        )
    return kept


class SigmaSchedule:
    """Picks the sigma of each step.

    Args:
        sigmas: (T,) the denoiser's sigma table, ascending.
        kind: ``"random"`` or ``"annealed"``.
        total_steps: steps in the run (for annealing).
        tick_trim, sigma_min, sigma_max: see :func:`allowed_sigmas`.
    """

    def __init__(
        self,
        sigmas: Tensor,
        kind: str = "random",
        total_steps: int = 1,
        tick_trim: tuple[int, int] = (30, 10),
        sigma_min: float | None = None,
        sigma_max: float | None = None,
    ) -> None:
        if kind not in ("random", "annealed"):
            raise ValueError(f"unknown sigma schedule {kind!r}; use 'random' or 'annealed'")
        self.kind = kind
        self.ticks = allowed_sigmas(sigmas, tick_trim, sigma_min, sigma_max).double().cpu().numpy()
        self.total_steps = total_steps

    @classmethod
    def from_config(cls, sigmas: Tensor, config: SJCConfig) -> "SigmaSchedule":
        return cls(sigmas, config.sigma_schedule, config.steps, config.tick_trim, config.sigma_min, config.sigma_max)

    @property
    def lo(self) -> float:
        return float(self.ticks[0])

    @property
    def hi(self) -> float:
        return float(self.ticks[-1])

    def __call__(self, step: int, rng: np.random.Generator) -> float:
        """The sigma of 0-based ``step``; ``rng`` is used by the random schedule only."""
        if self.kind == "random":
            return float(self.ticks[rng.integers(len(self.ticks))])
        frac = step / max(self.total_steps - 1, 1)
        target = math.exp((1.0 - frac) * math.log(self.hi) + frac * math.log(self.lo))
        return float(self.ticks[np.abs(self.ticks - target).argmin()])
