"""Seconds per SJC optimiser step, split into render forward, render backward, denoiser (PAAS) and optimiser.

Settings:
- ``reference``: pals-ttic/sjc's: 100^3 grid, 4 latent channels, 64 x 64 render, a UNet2DConditionModel with
  Stable Diffusion 1.5's exact shape (random weights cost what real ones cost), guidance 100 (two UNet branches
  batched), fp16 on CUDA. On a CPU it is slow: use ``--steps 2``.
- ``embedded``: the embedded model with its recommended settings (``sjc_engine/models/embedded``), or when it is
  absent a tiny pixel UNet at 32 x 32 on a 64^3 grid.

    python bench/bench_step.py --setting embedded --steps 20
    python bench/bench_step.py --setting reference --steps 20 --device cuda --record

``--record`` appends a table row to bench/RESULTS.md under "## Optimiser step (bench_step.py)".
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sjc_engine.threads import apply_openmp_defaults  # noqa: E402

apply_openmp_defaults()  # as the CLI and the worker do, before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sjc_engine.cameras import sample_camera, view_prompt  # noqa: E402
from sjc_engine.config import SJCConfig  # noqa: E402
from sjc_engine.denoisers.diffusers_denoiser import DiffusersDenoiser  # noqa: E402
from sjc_engine.losses import emptiness_loss  # noqa: E402
from sjc_engine.native.adamax import FusedAdamax  # noqa: E402
from sjc_engine.paas import paas_grad  # noqa: E402
from sjc_engine.sigmas import SigmaSchedule  # noqa: E402

SECTION = "## Optimiser step (bench_step.py)"


def _word_tokenizer(max_len: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "a", "of", "view", "front", "side", "backside", "overhead", "red", "cube"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", model_max_length=max_len)


def reference_denoiser(device: torch.device, dtype: torch.dtype) -> DiffusersDenoiser:
    """SD 1.5's UNet shape with random weights; a one-layer text encoder (its output is cached per prompt)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # SD 1.5 v1-inference
    tok = _word_tokenizer(77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                                        intermediate_size=3072, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=0))
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    return DiffusersDenoiser(unet, sched, text, tok, None, device=device, dtype=dtype)


def tiny_pixel_denoiser(device: torch.device, dtype: torch.dtype) -> DiffusersDenoiser:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = _word_tokenizer(8)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=128, max_position_embeddings=8,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=0))
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64, 64),
        cross_attention_dim=64, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )
    return DiffusersDenoiser(unet, DDPMScheduler(num_train_timesteps=1000), text, tok, None, device=device, dtype=dtype)


def setting(name: str, device: torch.device, half: bool) -> tuple[SJCConfig, DiffusersDenoiser, str]:
    dtype = torch.float16 if (half and device.type == "cuda") else torch.float32
    if name == "reference":
        cfg = SJCConfig(prompt="a red cube", grid_size=100, render_size=64, guidance_scale=100.0)
        return cfg, reference_denoiser(device, dtype), "SD 1.5-shaped UNet (random), 100^3, 64x64"
    from sjc_engine.catalog import ModelNotFoundError, resolve_model

    try:
        info = resolve_model("embedded")
    except ModelNotFoundError:
        cfg = SJCConfig(prompt="a red cube", grid_size=64, render_size=32, guidance_scale=10.0, sigma_min=0.05, sigma_max=3.0)
        return cfg, tiny_pixel_denoiser(device, dtype), "tiny pixel UNet (embedded absent), 64^3, 32x32"
    from sjc_engine.denoisers.loader import load_from_path

    cfg = SJCConfig.for_model(info.defaults, prompt="a red cube")
    den = load_from_path(info.path, device=device, dtype=dtype)
    return cfg, den, f"embedded model, {cfg.grid_size}^3, {cfg.render_size}x{cfg.render_size}"


def bench(cfg: SJCConfig, den: DiffusersDenoiser, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    from sjc_engine.field import VoxelField
    from sjc_engine.renderer import render_image

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    field = VoxelField(cfg.grid_size, den.channels, cfg.bbox, cfg.density_shift).to(device)
    opt = FusedAdamax(field.param_groups(cfg.lr, cfg.bg_lr), lr=cfg.lr)
    sched = SigmaSchedule.from_config(den.sigmas, cfg)

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    times = {"render_fwd": 0.0, "render_bwd": 0.0, "denoiser": 0.0, "optimizer": 0.0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        t0 = sync()
        cam = sample_camera(rng, cfg.render_size, cfg.cam_radius, cfg.elev_range_deg, cfg.fov_range_deg)
        cond = den.encode_prompt(view_prompt(cfg.prompt, cam))
        out = render_image(field, cam, cfg.step_ratio)
        y = out.image[None]  # (1, C, H, W)
        t1 = sync()
        g = paas_grad(den, y.detach(), sched(i, rng), cond=cond, guidance_scale=cfg.guidance_scale,
                      n_noise=cfg.n_noise, var_red=cfg.var_red, generator=gen).grad
        t2 = sync()
        opt.zero_grad(set_to_none=True)
        reg = cfg.emptiness_weight * emptiness_loss(out.weights, cfg.emptiness_scale)
        torch.autograd.backward([y, reg], [-g.to(y), torch.ones_like(reg)])
        t3 = sync()
        opt.step()
        t4 = sync()
        if i >= warmup:
            for k, dt_ in zip(times, (t1 - t0, t3 - t2, t2 - t1, t4 - t3)):
                times[k] += dt_
    res = {k: v / steps for k, v in times.items()}
    res["total"] = sum(res.values())
    res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return res


def record(line: str, header: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\nSeconds per optimiser step (mean over timed steps, after warm-up). " \
            "Command: `python bench/bench_step.py --setting S --steps N [--device cuda] --record`.\n\n" + header + "\n"
    lines = text.split("\n")
    start = lines.index(SECTION)
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    while end > start and lines[end - 1].strip() == "":
        end -= 1
    lines.insert(end, line)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=["reference", "embedded"], default="embedded")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--fp32", action="store_true", help="no fp16 on CUDA")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cfg, den, what = setting(args.setting, device, not args.fp32)
    res = bench(cfg, den, device, args.steps, args.warmup)
    hw = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    prec = str(den.dtype).replace("torch.", "")
    print(f"{what} on {hw}, {prec}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.items()))
    if args.record:
        header = "| date | setting | device | precision | steps | render fwd | render bwd | denoiser (PAAS) | optimizer | total s/step | it/s | peak GiB |\n" \
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        peak = "" if np.isnan(res["peak_gib"]) else f"{res['peak_gib']:.2f}"
        line = (f"| {dt.date.today()} | {what} | {hw} | {prec} | {args.steps} | {res['render_fwd']:.4f} | {res['render_bwd']:.4f} | "
                f"{res['denoiser']:.4f} | {res['optimizer']:.4f} | {res['total']:.4f} | {1 / res['total']:.2f} | "
                f"{peak} |")
        record(line, header)


if __name__ == "__main__":
    main()
