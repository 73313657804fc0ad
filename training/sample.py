"""A plain 2D sampler for checking the embedded model: DDIM/ancestral steps with x0 clipping and CFG.

    python -m training.sample --model sjc_engine/models/embedded --out .sjc/samples.png \\
        --prompts "a red cube" "a blue torus" --n 6 --steps 50 --guidance 3

Written by hand on purpose (DESIGN.md section 4: a library DDIM sampled pure noise from early checkpoints
where a loop that clips the predicted clean image did not), so a bad grid means a bad model, not a sampler.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .model import encode_text, load_model


@torch.no_grad()
def sample(
    model_dir: str | Path,
    prompts: list[str],
    n_per_prompt: int = 4,
    steps: int = 50,
    guidance: float = 3.0,
    eta: float = 1.0,
    seed: int = 0,
) -> Tensor:
    """Samples (len(prompts) * n_per_prompt, 3, S, S) in [-1, 1], prompt-major.

    Args:
        model_dir: the saved model folder.
        prompts: text prompts (may include view prefixes).
        n_per_prompt: samples per prompt.
        steps: sampling steps, evenly spaced over the training ticks.
        guidance: classifier-free guidance scale (1 = conditional only).
        eta: 1 = ancestral (DDPM-like) noise, 0 = deterministic DDIM.
        seed: seeds the initial noise and the ancestral noise.
    """
    unet, text_encoder, tokenizer, scheduler = load_model(model_dir)
    unet.eval()
    text_encoder.eval()
    abar = scheduler.alphas_cumprod.double()  # (T,)
    T = len(abar)
    gen = torch.Generator().manual_seed(seed)
    caps = [p for p in prompts for _ in range(n_per_prompt)]
    B = len(caps)
    S = unet.config.sample_size
    cond = encode_text(tokenizer, text_encoder, caps)  # (B, L, D)
    uncond = encode_text(tokenizer, text_encoder, [""] * B)  # (B, L, D)
    ticks = np.linspace(T - 1, 0, steps).round().astype(int)
    x = torch.randn(B, 3, S, S, generator=gen, dtype=torch.float64)
    for i, t in enumerate(ticks):
        a_t = abar[t]
        a_prev = abar[ticks[i + 1]] if i + 1 < len(ticks) else torch.tensor(1.0, dtype=torch.float64)
        tt = torch.full((B,), int(t))
        eps_all = unet(torch.cat([x, x]).float(), torch.cat([tt, tt]), torch.cat([uncond, cond])).sample.double()
        eps_u, eps_c = eps_all.chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()  # consistent with the clipped x0
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64) if i + 1 < len(ticks) else 0.0
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise
    return x.float().clamp(-1, 1)


def save_grid(images: Tensor, cols: int, path: str | Path, scale: int = 4) -> Path:
    """Save images (N, 3, S, S) in [-1, 1] as one PNG grid, ``cols`` per row, upscaled ``scale`` x (nearest)."""
    N, C, S, _ = images.shape
    rows = (N + cols - 1) // cols
    pad = torch.ones(rows * cols - N, C, S, S)
    x = torch.cat([images, pad]).reshape(rows, cols, C, S, S).permute(0, 3, 1, 4, 2)  # (rows, S, cols, S, C)
    arr = ((x.reshape(rows * S, cols * S, C) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    img = Image.fromarray(arr).resize((cols * S * scale, rows * S * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="sample a grid from the embedded model")
    p.add_argument("--model", type=Path, default=Path("sjc_engine/models/embedded"))
    p.add_argument("--out", type=Path, default=Path(".sjc/samples.png"))
    p.add_argument("--prompts", nargs="+", default=["a red cube", "a green sphere", "a blue torus", "a yellow cone", "a purple cylinder"])
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    imgs = sample(a.model, a.prompts, a.n, a.steps, a.guidance, a.eta, a.seed)
    print(save_grid(imgs, a.n, a.out))


if __name__ == "__main__":
    main()
