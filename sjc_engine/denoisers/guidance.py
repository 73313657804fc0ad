"""The guidance-scale embedding of a guidance-distilled UNet (one call gives the classifier-free guided output).

Such a UNet takes ``timestep_cond``, an embedding of the guidance scale ``w`` added to its time embedding
(diffusers' ``time_cond_proj_dim``). The embedding is the one latent consistency models use
(``LatentConsistencyModelPipeline.get_guidance_scale_embedding`` of ``w - 1``): sines and cosines of
``1000 (w - 1)`` at geometric frequencies, so ``w = 1`` (no guidance: the conditional prediction) embeds as
zeros and ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """Embeddings (B, dim) of guidance scales ``w`` (B,), float32."""
    if dim % 2:
        raise ValueError(f"the guidance embedding's width must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1)))
    x = 1000.0 * (w.float() - 1.0)[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.sin(x), torch.cos(x)], dim=1)
