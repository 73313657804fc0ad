"""Diffusers models as VE denoisers: Stable Diffusion 1.x/2.x latents, text-conditioned and unconditional pixel UNets.

One class covers three layouts (see :func:`sjc_engine.denoisers.loader.load_denoiser` for loading):

- latent: ``UNet2DConditionModel`` + ``AutoencoderKL`` + ``CLIPTextModel`` + tokenizer (SD 1.x/2.x). The field
  renders straight into the VAE latent space scaled by ``vae.config.scaling_factor`` (what the UNet sees);
  :meth:`decode` undoes the scaling and runs the VAE decoder.
- pixel, text-conditioned: ``UNet2DConditionModel`` + ``CLIPTextModel`` + tokenizer, images in [-1, 1]
  (the embedded model's format).
- pixel, unconditional: ``UNet2DModel`` (DDPM), images in [-1, 1].

Every UNet is an epsilon (or v / sample) predictor of a VP schedule; :mod:`sjc_engine.denoisers.vpve` turns it
into ``D(x, sigma)``. Classifier-free guidance ``eps_u + s (eps_c - eps_u)`` batches both branches in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from sjc_engine.denoisers.base import Denoiser
from sjc_engine.denoisers.vpve import (
    alphas_cumprod_float64, eps_to_denoised, nearest_tick, scale_input, sigmas_from_alphas_cumprod, v_to_eps,
)
from sjc_engine.parallel import run_jobs, workers

PredictionType = Literal["epsilon", "v_prediction", "sample"]


@dataclass
class TextCond:
    """Text conditioning of one prompt.

    Attributes:
        cond: (1, L, D) the prompt's text-encoder hidden states.
        uncond: (1, L, D) those of the empty prompt "" (the unconditional branch of guidance).
    """

    cond: Tensor
    uncond: Tensor

    def batch(self, size: int) -> "TextCond":
        """The conditioning of a batch of ``size`` images: ``cond`` (V, L, D) covers V images; a batch of
        ``k * V`` images is k groups of them (PAAS noise samples of the same views)."""
        v = self.cond.shape[0]
        if size % v:
            raise ValueError(f"a batch of {size} images cannot take the conditioning of {v} prompts")
        cond = self.cond.expand(size, -1, -1) if v == 1 else self.cond.repeat(size // v, 1, 1)  # (size, L, D)
        return TextCond(cond=cond, uncond=self.uncond.expand(size, -1, -1))


class DiffusersDenoiser(Denoiser):
    """``D(x, sigma)`` from a diffusers UNet and its DDPM-family scheduler.

    Args:
        unet: a ``UNet2DConditionModel`` (text-conditioned) or ``UNet2DModel`` (unconditional).
        scheduler: the training scheduler (anything with ``alphas_cumprod`` and ``config.prediction_type``).
        text_encoder: a ``CLIPTextModel`` for text-conditioned UNets, else ``None``.
        tokenizer: the tokenizer that goes with ``text_encoder``.
        vae: an ``AutoencoderKL`` for latent models, else ``None`` (pixel space).
        device: where the models run (they are moved there).
        dtype: the models' precision (``torch.float16`` on CUDA, ``torch.float32`` on CPU).
        prediction_type: overrides ``scheduler.config.prediction_type``.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: Any,
        text_encoder: torch.nn.Module | None = None,
        tokenizer: Any = None,
        vae: torch.nn.Module | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        prediction_type: PredictionType | None = None,
    ) -> None:
        if (text_encoder is None) != (tokenizer is None):
            raise ValueError("a text encoder needs its tokenizer and a tokenizer its text encoder")
        self.device = torch.device(device)
        self.dtype = dtype
        self.unet = self._prepare(unet)
        self.text_encoder = self._prepare(text_encoder) if text_encoder is not None else None
        self.tokenizer = tokenizer
        self.vae = self._prepare(vae) if vae is not None else None
        self.is_latent = vae is not None
        self.is_text_conditioned = text_encoder is not None
        self.prediction_type: PredictionType = prediction_type or getattr(scheduler.config, "prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
        self.alphas_cumprod = alphas_cumprod_float64(scheduler)  # (T,) float64 on the CPU
        self.sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)  # (T,) float64 on the CPU
        self.channels = int(unet.config.in_channels)
        size = unet.config.sample_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.scaling_factor = float(vae.config.scaling_factor) if vae is not None else 1.0
        self._prompt_cache: dict[str, Tensor] = {}

    def _prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        if any(p.dtype != self.dtype for p in module.parameters()):
            module = module.to(dtype=self.dtype)
        module = module.to(device=self.device).eval()
        module.requires_grad_(False)
        return module

    # -- text -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, prompt: str) -> Tensor:
        """(1, L, D) text-encoder hidden states of ``prompt``, cached per prompt."""
        if prompt in self._prompt_cache:
            return self._prompt_cache[prompt]
        assert self.tokenizer is not None and self.text_encoder is not None
        max_len = int(self.text_encoder.config.max_position_embeddings)
        tok_max = getattr(self.tokenizer, "model_max_length", max_len) or max_len
        max_len = min(max_len, int(tok_max))
        if self.tokenizer.pad_token is None:
            raise ValueError("the tokenizer has no pad token; prompts cannot be padded to one length for guidance")
        ids = self.tokenizer(
            prompt, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)  # (1, L)
        emb = self.text_encoder(ids)[0].to(self.dtype)  # (1, L, D)
        self._prompt_cache[prompt] = emb
        return emb

    def encode_prompt(self, prompt: str) -> TextCond | None:
        """The prompt's and the empty prompt's embeddings; ``None`` for unconditional models."""
        if not self.is_text_conditioned:
            return None
        return TextCond(cond=self._embed(prompt), uncond=self._embed(""))

    def encode_prompts(self, prompts: list[str]) -> TextCond | None:
        """One prompt per image of a batch: ``cond`` (V, L, D); ``None`` for unconditional models."""
        if not self.is_text_conditioned:
            return None
        if len(prompts) == 1:
            return self.encode_prompt(prompts[0])
        return TextCond(cond=torch.cat([self._embed(p) for p in prompts]), uncond=self._embed(""))

    # -- denoising --------------------------------------------------------------------------------------------
    def _unet(self, x_in: Tensor, t: int, context: Tensor | None) -> Tensor:
        """The UNet's prediction in float32 (B, C, H, W); ``x_in`` and ``context`` in the model's dtype."""
        ts = torch.full((x_in.shape[0],), t, device=self.device, dtype=torch.long)  # (B,)
        if context is None:
            out = self.unet(x_in, ts)
        else:
            out = self.unet(x_in, ts, encoder_hidden_states=context)
        if not isinstance(out, Tensor):  # diffusers' output object; the lean UNet returns the tensor itself
            out = out.sample
        if out.shape[1] == 2 * self.channels:  # learned variance: keep the mean prediction
            out = out[:, : self.channels]
        return out.float()

    @torch.no_grad()
    def model_output(self, x_in: Tensor, t: int, cond: TextCond | None, guidance_scale: float) -> Tensor:
        """The UNet's (guided) raw prediction for the VP input ``x_in`` (B, C, H, W) at tick ``t``, float32.

        Both branches leave the UNet in float32 and guidance is combined there. (At scale 100 in fp16 the guided
        eps is ~1e-2 relative off the float32 one, measured on a tiny random SD; that comes from the UNet's own
        half-precision outputs, whose difference guidance multiplies, not from the combination.)
        """
        if not self.is_text_conditioned:
            return self._unet(x_in, t, None)
        if cond is None:
            raise ValueError("this model is text-conditioned: pass cond=denoiser.encode_prompt(prompt)")
        batch = cond.batch(x_in.shape[0])  # (B, L, D) each
        if guidance_scale == 1.0:
            return self._unet(x_in, t, batch.cond)
        if x_in.device.type == "cpu" and workers() > torch.get_num_threads():
            # threads the run has beyond torch's own (a small model's, sjc_engine/threads.py): the two branches
            # side by side, each a batch of B (torch's kernels release the GIL)
            outs: dict[str, Tensor] = {}

            def branch(name: str, context: Tensor) -> None:
                with torch.no_grad():
                    outs[name] = self._unet(x_in, t, context)

            run_jobs([partial(branch, "u", batch.uncond), partial(branch, "c", batch.cond)])
            out_u, out_c = outs["u"], outs["c"]
        else:
            out = self._unet(torch.cat([x_in, x_in]), t, torch.cat([batch.uncond, batch.cond]))  # (2B, C, H, W)
            out_u, out_c = out.chunk(2)
        return out_u + guidance_scale * (out_c - out_u)

    @torch.no_grad()
    def denoise(self, x: Tensor, sigma: float, cond: Any = None, guidance_scale: float = 1.0) -> Tensor:
        t, sigma = nearest_tick(self.sigmas, sigma)  # sigma snaps to the tick, as in the reference
        abar = float(self.alphas_cumprod[t])
        x_scaled = scale_input(x, sigma)  # (B, C, H, W) in x's dtype and device
        x_in = x_scaled.to(device=self.device, dtype=self.dtype)  # what the UNet sees
        out = self.model_output(x_in, t, cond, guidance_scale).to(device=x.device, dtype=x.dtype)
        if self.prediction_type == "sample":  # a clean-image predictor is D itself
            return out
        eps = v_to_eps(x_scaled, out, abar) if self.prediction_type == "v_prediction" else out
        return eps_to_denoised(x, sigma, eps)

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        """Model-space images (B, C, H, W) to RGB in [0, 1]: the VAE decoder for latents, else ``(x + 1) / 2``."""
        if self.vae is None:
            return super().decode(x)
        z = (x / self.scaling_factor).to(device=self.device, dtype=self.dtype)
        img = self.vae.decode(z).sample.float()  # (B, 3, 8H, 8W) in [-1, 1]
        return ((img + 1) / 2).clamp(0, 1).to(x.device)
