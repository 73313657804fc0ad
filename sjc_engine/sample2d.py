"""2D validation of PAAS: the parameters are the image itself (f = identity), so PAAS alone samples an image.

Starting from a flat or noisy image, each step adds the PAAS ascent direction (through the same
``x.backward(-grad)`` + Adamax machinery as the 3D loop) at a sigma from the schedule; annealing sigma from
high to low walks the image onto the data. Guidance defaults to 3, the reference's 2D setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sjc_engine.callbacks import Callbacks, StepReport
from sjc_engine.denoisers.base import Denoiser
from sjc_engine.paas import paas_grad
from sjc_engine.sigmas import SigmaSchedule


@dataclass
class Sample2DConfig:
    """Settings of a 2D PAAS sampling run.

    Args:
        prompt: text prompt (ignored by unconditional models).
        steps: optimiser steps.
        guidance_scale: classifier-free guidance scale (reference 2D: 3).
        sigma_schedule: ``"annealed"`` (high to low) or ``"random"``.
        tick_trim, sigma_min, sigma_max: the sigma range (see :func:`sjc_engine.sigmas.allowed_sigmas`).
        n_noise: PAAS noise samples per step.
        var_red: ``(D - y)/sigma`` (True) or ``(D - z)/sigma``.
        lr: Adamax learning rate on the pixels.
        init: ``"zeros"`` (a flat grey image) or ``"noise"`` (uniform in [-1, 1]).
        seed: seeds the initial image and the PAAS noise.
        preview_every: steps between previews passed to callbacks (0: never).
    """

    prompt: str = ""
    steps: int = 500
    guidance_scale: float = 3.0
    sigma_schedule: Literal["random", "annealed"] = "annealed"
    tick_trim: tuple[int, int] = (30, 10)
    sigma_min: float | None = None
    sigma_max: float | None = None
    n_noise: int = 1
    var_red: bool = True
    lr: float = 0.05
    init: Literal["zeros", "noise"] = "zeros"
    seed: int = 0
    preview_every: int = 0


@dataclass
class Sample2DResult:
    """``image`` (1, C, H, W) in model space; ``rgb`` (H', W', 3) uint8 decoded; steps done; stopped early."""

    image: torch.Tensor
    rgb: np.ndarray
    step: int
    stopped: bool


def _to_uint8(denoiser: Denoiser, x: torch.Tensor) -> np.ndarray:
    from sjc_engine.export.images import to_uint8_image

    return to_uint8_image(denoiser.decode(x.detach().to(denoiser.device)).float()[0])  # (3, H, W) -> (H, W, 3)


def sample2d(
    denoiser: Denoiser,
    config: Sample2DConfig | None = None,
    callbacks: Callbacks | None = None,
    init: torch.Tensor | None = None,
) -> Sample2DResult:
    """Sample one image by PAAS ascent on the pixels (or latents) themselves.

    Args:
        denoiser: the VE denoiser.
        config: the run's settings.
        callbacks: progress (``on_step``) and cooperative cancel (``should_stop``).
        init: (1, C, H, W) starting image instead of ``config.init``.
    """
    cfg = config or Sample2DConfig()
    cb = callbacks or Callbacks()
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (1, denoiser.channels, denoiser.image_size, denoiser.image_size)
    if init is not None:
        x0 = init.detach().float().clone()
    elif cfg.init == "noise":
        x0 = torch.rand(shape, generator=gen) * 2 - 1
    else:
        x0 = torch.zeros(shape)
    x = torch.nn.Parameter(x0.to(denoiser.device))
    opt = torch.optim.Adamax([x], lr=cfg.lr)
    schedule = SigmaSchedule(denoiser.sigmas, cfg.sigma_schedule, cfg.steps, cfg.tick_trim, cfg.sigma_min, cfg.sigma_max)
    np_rng = np.random.default_rng(cfg.seed)
    cond = denoiser.encode_prompt(cfg.prompt)
    stopped, done = False, 0
    for step in range(cfg.steps):
        if cb.should_stop():
            stopped = True
            break
        sigma = schedule(step, np_rng)
        out = paas_grad(denoiser, x.detach(), sigma, cond=cond, guidance_scale=cfg.guidance_scale,
                        n_noise=cfg.n_noise, var_red=cfg.var_red, generator=gen)
        opt.zero_grad(set_to_none=True)
        x.backward(-out.grad.to(x))  # identity renderer: the VJP is the gradient itself
        opt.step()
        done = step + 1
        preview = _to_uint8(denoiser, x) if cfg.preview_every > 0 and done % cfg.preview_every == 0 else None
        cb.on_step(StepReport(step=done, total=cfg.steps, losses={"score": float(out.grad.pow(2).mean())},
                              sigma=sigma, preview=preview))
    image = x.detach()
    return Sample2DResult(image=image, rgb=_to_uint8(denoiser, image), step=done, stopped=stopped)
