"""The denoiser interface SJC needs: D(x, sigma) in the variance-exploding (VE) convention.

Every model (Stable Diffusion latents, pixel DDPMs, the embedded model, analytic test oracles)
is wrapped into this one shape so that PAAS and the optimiser loop never see model specifics.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor


class Denoiser(abc.ABC):
    """A denoiser ``D(x, sigma)`` with ``x = y + sigma * n`` (VE convention).

    Attributes:
        channels: channels of the space the field renders into (4 for SD latents, 3 for pixels).
        image_size: side of the images the model expects (64 for SD 1.x latents, 32 embedded).
        sigmas: ``(T,)`` VE noise level of each discrete timestep tick, ascending with t.
        is_latent: whether ``x`` lives in a VAE latent space (then :meth:`decode` runs the VAE).
        baked_light: direction towards the light the model's training images were shaded by, when the model
            declares one (``sjc_model.json``); the mesh export takes that shading out of its colours.
        device, dtype: where and in what precision the model runs.
    """

    channels: int
    image_size: int
    sigmas: Tensor
    is_latent: bool = False
    baked_light: tuple[float, float, float] | None = None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def encode_prompt(self, prompt: str) -> Any:
        """Text conditioning for ``prompt`` (with the unconditional embedding for guidance).

        Unconditional models return ``None``.
        """
        return None

    def encode_prompts(self, prompts: list[str]) -> Any:
        """Conditioning of a batch of images, one prompt each (the views of one step); ``None`` for unconditional
        models. The denoiser takes it for a batch of ``k * len(prompts)`` images: ``k`` groups of those images."""
        if all(self.encode_prompt(p) is None for p in prompts):
            return None
        raise NotImplementedError(f"{type(self).__name__} cannot condition a batch on several prompts")

    @abc.abstractmethod
    def denoise(self, x: Tensor, sigma: float, cond: Any = None, guidance_scale: float = 1.0) -> Tensor:
        """``D(x, sigma)``: the denoised estimate of ``x`` (B, C, H, W) at noise level ``sigma``.

        Runs in the model's dtype internally and returns ``x``'s dtype.
        """

    def decode(self, x: Tensor) -> Tensor:
        """Map model-space images (B, C, H, W) to RGB in [0, 1], shape (B, 3, H', W')."""
        return ((x.clamp(-1, 1) + 1) / 2)[:, :3]
