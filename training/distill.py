"""Distil classifier-free guidance into the embedded model: one UNet call gives the guided prediction.

    OMP_NUM_THREADS=2 python -m training.distill --teacher sjc_engine/models/embedded --out .sjc/embedded_gd \\
        --state .sjc/embedded_gd_train/state.pt --log .sjc/embedded_gd_train/train.log --steps 3000 --scale 5

The student is the teacher's UNet, initialised from it and trained to give, for a prompt, the teacher's guided
prediction ``eps_u + s (eps_c - eps_u)`` at the same noisy input for one scale ``s`` (``--scale``; Meng et al.,
"On distillation of guided diffusion models", CVPR 2023, stage one, without the scale as an input), and for the
empty prompt (``--cfg-drop`` of the captions) the teacher's unconditional ``eps_u``. So one call gives scale ``s``,
and any other scale ``w`` is ``eps_u + (w / s) (eps_s - eps_u)`` from the student's two branches
(:mod:`sjc_engine.denoisers.diffusers_denoiser`). Inputs are the training renders (random backgrounds as in the
shipped model's second stage), noised at ticks drawn mostly from the sigmas SJC runs use (``--sigma-range``). The
text encoder and tokenizer are the teacher's, unchanged. Resumable like :mod:`training.train` (``--state``); the
EMA student is written to ``--out`` every ``--save-every`` steps with the teacher's ``sjc_model.json`` plus
``"guidance_distilled": {"scale": s}``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from .dataset import ProceduralDataset
from .model import encode_text, load_model
from .train import _ema_update, _log, _save_state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", type=Path, default=Path("sjc_engine/models/embedded"))
    p.add_argument("--out", type=Path, required=True, help="student model folder (diffusers)")
    p.add_argument("--state", type=Path, required=True, help="resumable state file")
    p.add_argument("--log", type=Path, required=True, help="log file (appended)")
    p.add_argument("--data-cache", type=Path, default=Path(".sjc/embedded_data"))
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=7e-4)
    p.add_argument("--lr-final", type=float, default=5e-5)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--scale", type=float, default=5.0, help="the guidance scale distilled (the model's default)")
    p.add_argument("--sigma-range", type=float, nargs=2, default=(0.04, 2.5), help="VE sigmas SJC scores at")
    p.add_argument("--in-range", type=float, default=0.8, help="share of ticks drawn within --sigma-range")
    p.add_argument("--cfg-drop", type=float, default=0.1, help="share of empty captions")
    p.add_argument("--random-bg", type=float, default=0.7)
    p.add_argument("--views-per-shape", type=int, default=800)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--deadline", type=str, default=None, help="UTC ISO time to stop at")
    return p.parse_args(argv)


def distill(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    deadline = dt.datetime.fromisoformat(args.deadline).replace(tzinfo=dt.timezone.utc) if args.deadline else None
    torch.manual_seed(args.seed)
    teacher, text_encoder, tokenizer, scheduler = load_model(args.teacher)
    teacher.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    ema = copy.deepcopy(student).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    if args.state.is_file():
        st = torch.load(args.state, weights_only=False)
        student.load_state_dict(st["student"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        step = st["step"]
        _log(args.log, f"resumed from {args.state} at step {step}")

    data = ProceduralDataset(seed=args.seed, views_per_shape=args.views_per_shape,
                             random_background_prob=args.random_bg, cache_dir=args.data_cache)
    abar = scheduler.alphas_cumprod  # (T,)
    sigmas = ((1 - abar) / abar).sqrt()  # (T,) VE sigma of each tick
    in_range = torch.nonzero((sigmas >= args.sigma_range[0]) & (sigmas <= args.sigma_range[1])).flatten()
    T = len(abar)
    _log(args.log, f"data {len(data)} images; ticks in sigma range {int(in_range.min())}..{int(in_range.max())}; "
                   f"args {vars(args)}")

    def save(reason: str) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        ema.save_pretrained(args.out / "unet", safe_serialization=True)
        for part in ("text_encoder", "tokenizer", "scheduler", "model_index.json"):
            src = args.teacher / part
            dst = args.out / part
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)
        meta = json.loads((args.teacher / "sjc_model.json").read_text())
        meta["guidance_distilled"] = {"scale": args.scale, "steps": step}
        (args.out / "sjc_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        _save_state(args.state, {"step": step, "student": student.state_dict(), "ema": ema.state_dict(),
                                 "opt": opt.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                                 "args": vars(args)})
        _log(args.log, f"saved EMA student to {args.out} and state at step {step} ({reason})")

    stop = {"signal": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("signal", True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__("signal", True))
    student.train()
    start, run_loss, run_n, t_last = step, 0.0, 0, time.time()
    while step < args.steps:
        images, captions = data.batch(args.batch_size, gen)  # (B, 3, 32, 32)
        B = len(captions)
        drop = torch.rand(B, generator=gen) < args.cfg_drop
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        pick = in_range[torch.randint(len(in_range), (B,), generator=gen)]
        anywhere = torch.randint(T, (B,), generator=gen)
        t = torch.where(torch.rand(B, generator=gen) < args.in_range, pick, anywhere)  # (B,)
        noisy = scheduler.add_noise(images, torch.randn(images.shape, generator=gen), t)
        with torch.no_grad():
            cond = encode_text(tokenizer, text_encoder, captions)  # (B, L, D)
            uncond = encode_text(tokenizer, text_encoder, [""]).expand_as(cond)
            out = teacher(torch.cat([noisy, noisy]), torch.cat([t, t]), torch.cat([uncond, cond])).sample
            eps_u, eps_c = out.chunk(2)
            target = eps_u + args.scale * (eps_c - eps_u)  # (B, 3, 32, 32); eps_u itself for an empty caption
        pred = student(noisy, t, cond).sample
        loss = F.mse_loss(pred, target)
        frac = (step - start) / max(1, args.steps - start)
        lr = args.lr_final + (args.lr - args.lr_final) * 0.5 * (1 + math.cos(math.pi * frac))
        lr *= min(1.0, (step + 1 - start) / max(1, args.warmup))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        step += 1
        _ema_update(ema, student, min(args.ema, (1 + step) / (10 + step)))
        run_loss += loss.item()
        run_n += 1
        if step % args.log_every == 0:
            now = time.time()
            _log(args.log, f"step {step} loss {run_loss / run_n:.5f} s/step {(now - t_last) / run_n:.3f}")
            run_loss, run_n, t_last = 0.0, 0, now
        late = deadline is not None and dt.datetime.now(dt.timezone.utc) >= deadline
        if step % args.save_every == 0 or step == args.steps or late or stop["signal"]:
            save("final" if step == args.steps else "deadline" if late else "signal" if stop["signal"] else "periodic")
        if late or stop["signal"]:
            break
    return step


def main(argv: list[str] | None = None) -> None:
    distill(parse_args(argv))


if __name__ == "__main__":
    main()
