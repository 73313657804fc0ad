"""Stable Diffusion 1.5 cost on one GPU: a random UNet of SD 1.5's exact shape at fp16 inside the real SJC loop.

A randomly initialised UNet with SD 1.5's shape costs exactly what the real one costs, so no weights are needed.
Measured (``--device cuda``):

- ``unet_ms``: one guided UNet call (batch 2: unconditional + conditional, 4 x 64 x 64, context 2 x 77 x 768),
  plain and with ``channels_last``;
- the SJC loop (grid 100, render 64, guidance 100, one noise sample, no previews): steps per second, the minutes
  10,000 steps would take, the share of a step spent outside the UNet (CUDA events around every UNet call),
  and peak VRAM (``torch.cuda.max_memory_allocated``);
- with ``--compile`` (or ``--compile-only``, which adds to an earlier run's JSON): the UNet call (channels_last)
  under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs), and its compile time.

``--tiny`` swaps in a tiny UNet and grid (the CPU dry run of ``bench/gpu_check.sh``). Writes one JSON file.

    python bench/gpu/bench_sd15.py --device cuda --steps 300 --out out/gpu_check/sd15.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sjc_engine.config import SJCConfig  # noqa: E402
from sjc_engine.denoisers.diffusers_denoiser import DiffusersDenoiser  # noqa: E402
from sjc_engine.optimize import run_sjc  # noqa: E402

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
)
SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
TOKENS = 77  # CLIP's context length in SD 1.5


class Clock:
    """Elapsed milliseconds of GPU work (CUDA events) or of wall time on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def mark(self) -> Any:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) if self.cuda else (b - a) * 1e3


def build_denoiser(device: torch.device, dtype: torch.dtype, tiny: bool) -> DiffusersDenoiser:
    """SD 1.5-shaped random UNet (or a tiny one), a one-layer random CLIP text encoder of the right width."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.fixtures.models import clip_tokenizer

    torch.manual_seed(0)
    cfg = TINY_UNET if tiny else SD15_UNET
    with tempfile.TemporaryDirectory() as tmp:
        tok = clip_tokenizer(Path(tmp))
    tok.model_max_length = TOKENS
    with torch.device(device):  # initialise on the GPU: 860M parameters initialise slowly on the CPU
        unet = UNet2DConditionModel(**cfg)
        hidden = int(cfg["cross_attention_dim"])
        text = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=4,
            num_hidden_layers=1, max_position_embeddings=TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=2,
        ))
    return DiffusersDenoiser(unet, DDPMScheduler(**SD_BETAS), text, tok, device=device, dtype=dtype)


def time_unet(den: DiffusersDenoiser, clock: Clock, warmup: int, iters: int, fn: Callable | None = None) -> float:
    """Milliseconds per guided UNet call (batch 2) at the UNet's own size."""
    size, cond = den.image_size, den.encode_prompt("a red cube")
    x = torch.randn(1, 4, size, size, device=den.device, dtype=den.dtype)
    call = fn or (lambda: den.model_output(x, 500, cond, guidance_scale=100.0))
    with torch.inference_mode():
        for _ in range(warmup):
            call()
        clock.sync()
        a = clock.mark()
        for _ in range(iters):
            call()
        b = clock.mark()
        clock.sync()
    return clock.ms(a, b) / iters


def time_sjc(den: DiffusersDenoiser, clock: Clock, steps: int, grid: int, render: int) -> dict[str, float]:
    """Steps per second of the SJC loop, the UNet's share of it and peak VRAM."""
    marks: list[tuple[Any, Any]] = []
    pre = den.unet.register_forward_pre_hook(lambda m, a: marks.append((clock.mark(), None)))
    post = den.unet.register_forward_hook(lambda m, a, o: marks.__setitem__(-1, (marks[-1][0], clock.mark())))
    config = SJCConfig(prompt="a red cube", model="bench", steps=steps, grid_size=grid, render_size=render,
                       device=den.device.type, preview_every=0, checkpoint_every=0, guidance_scale=100.0)
    run_sjc(SJCConfig(**{**config.to_dict(), "steps": 5}), den)  # warm-up: kernels, allocator, prompts
    marks.clear()
    if clock.cuda:
        torch.cuda.reset_peak_memory_stats()
    clock.sync()
    t0 = time.perf_counter()
    run_sjc(config, den)
    clock.sync()
    wall = time.perf_counter() - t0
    pre.remove()
    post.remove()
    unet_s = sum(clock.ms(a, b) for a, b in marks) / 1e3
    out = {
        "sjc_steps": steps, "sjc_wall_s": wall, "steps_per_s": steps / wall, "unet_calls": len(marks),
        "unet_share": unet_s / wall, "outside_unet_share": 1.0 - unet_s / wall,
        "minutes_per_10k_steps": 10_000 / (steps / wall) / 60,
    }
    if clock.cuda:
        out["peak_vram_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_vram_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    p.add_argument("--tiny", action="store_true", help="tiny UNet and grid (the CPU dry run)")
    p.add_argument("--steps", type=int, default=300, help="measured SJC steps (default 300)")
    p.add_argument("--iters", type=int, default=50, help="timed UNet calls (default 50)")
    p.add_argument("--compile", action="store_true", help="also time the UNet under torch.compile (CUDA graphs)")
    p.add_argument("--compile-only", action="store_true",
                   help="time only the compiled UNet and add it to the figures already in --out")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    clock = Clock(device)
    den = build_denoiser(device, dtype, args.tiny)
    grid, render = (16, den.image_size) if args.tiny else (100, den.image_size)
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""), "tiny": args.tiny,
        "unet_params_m": sum(p.numel() for p in den.unet.parameters()) / 1e6, "grid": grid, "render": render,
    }
    if device.type == "cuda":
        res["weights_vram_gb"] = torch.cuda.memory_allocated() / 2**30
    if args.compile_only:
        res = json.loads(args.out.read_text())

    def save() -> None:  # after every figure: a stage cut short by its time limit keeps what it measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))

    warmup = 3 if args.tiny else 10
    if not args.compile_only:
        res["unet_ms"] = time_unet(den, clock, warmup, args.iters)
        res.update(time_sjc(den, clock, args.steps, grid, render))
        save()
    den.unet.to(memory_format=torch.channels_last)
    if not args.compile_only:
        res["unet_ms_channels_last"] = time_unet(den, clock, warmup, args.iters)
        save()
    if args.compile or args.compile_only:
        t0 = time.perf_counter()
        compiled = torch.compile(den.unet, mode="reduce-overhead")
        size, cond = den.image_size, den.encode_prompt("a red cube")
        x = torch.randn(2, 4, size, size, device=device, dtype=dtype)
        ctx = torch.cat([cond.uncond, cond.cond])
        ts = torch.full((2,), 500, device=device, dtype=torch.long)
        fn = lambda: compiled(x, ts, encoder_hidden_states=ctx).sample  # noqa: E731
        with torch.inference_mode():
            fn()
        clock.sync()
        res["compile_s"] = time.perf_counter() - t0
        res["unet_ms_compiled"] = time_unet(den, clock, warmup, args.iters, fn)
    save()
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
