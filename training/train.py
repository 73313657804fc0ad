"""Train the embedded model from scratch on procedural renders (CPU friendly, resumable, reproducible).

    python -m training.train --out sjc_engine/models/embedded --steps 20000 \\
        --state .sjc/embedded_train/state.pt --log .sjc/embedded_train/train.log

Epsilon-prediction DDPM loss with Min-SNR-5 weighting, AdamW, EMA of the UNet and text encoder weights,
15% of captions dropped to "" for classifier-free guidance. Every ``--save-every`` steps the EMA model is
written to ``--out`` atomically (diffusers format, see :func:`.model.save_model`) and the full training state
to ``--state``; a rerun with the same ``--state`` resumes from it. It stops after ``--steps`` steps, at
``--deadline`` (UTC, ISO time) or on SIGTERM/SIGINT, saving first.

``--init-from DIR`` starts a fresh run (no ``--state`` yet) from a saved model folder, e.g. the shipped
weights, with a fresh optimiser; ``--lr-final`` decays the learning rate along a cosine from ``--lr`` to it
over the steps left. This package is the model's training code only: the runtime (``sjc_engine``) never
imports it and it is not part of the wheel.
"""

from __future__ import annotations

import argparse
import copy
import math
import datetime as dt
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import ProceduralDataset
from .model import (
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    default_meta,
    encode_text,
    load_model,
    save_model,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("sjc_engine/models/embedded"), help="model folder (diffusers)")
    p.add_argument("--state", type=Path, default=Path(".sjc/embedded_train/state.pt"), help="resumable state file")
    p.add_argument("--log", type=Path, default=Path(".sjc/embedded_train/train.log"), help="log file (appended)")
    p.add_argument("--data-cache", type=Path, default=Path(".sjc/embedded_data"), help="rendered-views cache")
    p.add_argument("--steps", type=int, default=20000, help="total optimiser steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--ema", type=float, default=0.995, help="EMA decay (warmed up as (1+k)/(10+k))")
    p.add_argument("--cfg-drop", type=float, default=0.15, help="probability of the empty caption")
    p.add_argument("--min-snr", type=float, default=5.0, help="Min-SNR-gamma loss weighting; 0 disables")
    p.add_argument("--views-per-shape", type=int, default=800)
    p.add_argument("--random-bg", type=float, default=0.0, help="probability of a random background colour")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--deadline", type=str, default=None, help="UTC ISO time to stop at, e.g. 2026-11-21T10:14")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    p.add_argument("--init-from", type=Path, default=None, help="model folder to start from when --state is absent")
    p.add_argument("--lr-final", type=float, default=None, help="cosine-decay the lr to this (default: constant)")
    return p.parse_args(argv)


def _log(path: Path, msg: str) -> None:
    line = f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} {msg}"
    print(line, flush=True)
    with path.open("a") as f:
        f.write(line + "\n")


def _save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


def train(args: argparse.Namespace) -> int:
    """Run (or resume) training; returns the number of steps done in total."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    deadline = dt.datetime.fromisoformat(args.deadline).replace(tzinfo=dt.timezone.utc) if args.deadline else None

    # 1. Seeds and components
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(tokenizer)
    unet = build_unet(cross_attention_dim=text_encoder.config.hidden_size)
    scheduler = build_scheduler()
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    step = 0

    # 2. Resume
    if args.state.is_file():
        st = torch.load(args.state, weights_only=False)
        unet.load_state_dict(st["unet"])
        text_encoder.load_state_dict(st["text_encoder"])
        ema_unet.load_state_dict(st["ema_unet"])
        ema_text.load_state_dict(st["ema_text"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        step = st["step"]
        _log(args.log, f"resumed from {args.state} at step {step}")
    elif args.init_from is not None:
        init_unet, init_text, _, _ = load_model(args.init_from)
        for dst in (unet, ema_unet):
            dst.load_state_dict(init_unet.state_dict())
        for dst in (text_encoder, ema_text):
            dst.load_state_dict(init_text.state_dict())
        _log(args.log, f"initialised from {args.init_from}")
    start_step = step

    # 3. Data
    t0 = time.time()
    data = ProceduralDataset(seed=args.seed, views_per_shape=args.views_per_shape,
                             random_background_prob=args.random_bg, cache_dir=args.data_cache)
    _log(args.log, f"data: {len(data)} images ({args.views_per_shape} views/shape) ready in {time.time() - t0:.1f}s")
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text_encoder.parameters())
    _log(args.log, f"params: unet {n_unet / 1e6:.3f}M text {n_text / 1e6:.3f}M; args {vars(args)}")

    alphas_cumprod = scheduler.alphas_cumprod  # (T,)
    snr = alphas_cumprod / (1 - alphas_cumprod)  # (T,)
    stop = {"signal": False}

    def _on_signal(signum: int, frame: Any) -> None:
        stop["signal"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    def save(reason: str) -> None:
        save_model(args.out, ema_unet, ema_text, tokenizer, scheduler, default_meta(step))
        _save_state(
            args.state,
            {
                "step": step,
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema_unet": ema_unet.state_dict(),
                "ema_text": ema_text.state_dict(),
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "args": vars(args),
            },
        )
        _log(args.log, f"saved EMA model to {args.out} and state at step {step} ({reason})")

    # 4. Training loop
    unet.train()
    text_encoder.train()
    run_loss, run_n, t_last = 0.0, 0, time.time()
    while step < args.steps:
        images, captions = data.batch(args.batch_size, gen)  # (B, 3, 32, 32)
        drop = torch.rand(len(captions), generator=gen) < args.cfg_drop
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        noise = torch.randn(images.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (images.shape[0],), generator=gen)
        noisy = scheduler.add_noise(images, noise, t)

        cond = encode_text(tokenizer, text_encoder, captions)  # (B, L, D)
        pred = unet(noisy, t, cond).sample
        per = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))  # (B,)
        if args.min_snr > 0:
            per = per * (snr[t].clamp(max=args.min_snr) / snr[t])
        loss = per.mean()

        lr = args.lr * min(1.0, (step + 1 - start_step) / max(1, args.warmup))
        if args.lr_final is not None:
            frac = (step - start_step) / max(1, args.steps - start_step)
            lr = args.lr_final + (lr - args.lr_final) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text_encoder, decay)

        run_loss += loss.item()
        run_n += 1
        if step % args.log_every == 0:
            now = time.time()
            _log(args.log, f"step {step} loss {run_loss / run_n:.4f} s/step {(now - t_last) / run_n:.3f}")
            run_loss, run_n, t_last = 0.0, 0, now
        late = deadline is not None and dt.datetime.now(dt.timezone.utc) >= deadline
        if step % args.save_every == 0 or step == args.steps or late or stop["signal"]:
            save("final" if step == args.steps else "deadline" if late else "signal" if stop["signal"] else "periodic")
        if late or stop["signal"]:
            break
    _log(args.log, f"stopped at step {step}")
    return step


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
