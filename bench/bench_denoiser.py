"""Cost of loading and calling the embedded model (or any pixel text model) on the CPU.

Two measurements:

``load``: one fresh process's import + ``load_denoiser`` wall time, printed as one JSON line. Time whole processes
side by side, e.g. with ``/usr/bin/time`` in a loop, alternating the two paths::

    for i in 1 2 3 4 5; do
      SJC_LEAN_MODELS=0 .venv/bin/python bench/bench_denoiser.py load   # diffusers + transformers
      .venv/bin/python bench/bench_denoiser.py load                     # lean path (default)
    done

``calls``: one guided UNet call (the CFG batch 2B in one call, as ``DiffusersDenoiser.denoise`` makes it) per
candidate, interleaved round by round in one process, median ms per call and the max abs difference to the
diffusers UNet's output::

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 .venv/bin/python bench/bench_denoiser.py calls --batches 1 2 4 8 --threads 2

Candidates: ``diffusers`` (the diffusers UNet), ``lean`` (:class:`sjc_engine.denoisers.lean.LeanUNet`, prompt parts
cached), ``lean_nocache`` (cache cleared before each call), ``lean_nchw`` (the lean UNet with NCHW weights and activations; the default is channels last),
``lean_bf16`` (bf16 autocast), ``lean_trace`` (the UNet body traced with ``torch.jit.trace``, what
``LeanUNet.TRACE_AFTER`` does in a run; its build time is printed). Pick with ``--candidates``. Run it as the CLI
runs (``OMP_WAIT_POLICY=PASSIVE``): spin-waiting threads on a busy machine swamp everything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cmd_load(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    import torch

    from sjc_engine.denoisers.loader import load_denoiser

    t1 = time.perf_counter()
    den = load_denoiser(args.model, device="cpu", half=False)
    t2 = time.perf_counter()
    cond = den.encode_prompt("a red cube")
    den.denoise(torch.zeros(1, den.channels, den.image_size, den.image_size), 1.0, cond, guidance_scale=10.0)
    t3 = time.perf_counter()
    heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("diffusers", "transformers")})
    print(json.dumps({"unet": type(den.unet).__name__, "import_s": round(t1 - t0, 3), "load_s": round(t2 - t1, 3),
                      "first_call_s": round(t3 - t2, 3), "imported": heavy}))


def cmd_calls(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from sjc_engine.denoisers.lean import LeanUNet
    from sjc_engine.denoisers.loader import LEAN_ENV, load_denoiser

    os.environ[LEAN_ENV] = "0"
    ref = load_denoiser(args.model, device="cpu", half=False)
    os.environ[LEAN_ENV] = "1"
    den = load_denoiser(args.model, device="cpu", half=False)
    assert isinstance(den.unet, LeanUNet), "this model does not load through the lean path"
    unet = den.unet
    unet.trace = False  # "lean" is the eager module; "lean_trace" below traces
    cond = den.encode_prompt("a red cube")
    nchw = LeanUNet(vars(unet.config)).eval()
    nchw.MEMORY_FORMAT = torch.contiguous_format
    nchw = nchw.to(memory_format=torch.contiguous_format)
    nchw.load_state_dict(unet.state_dict())
    traced = LeanUNet(vars(unet.config)).eval()
    traced.load_state_dict(unet.state_dict())
    traced.TRACE_AFTER = 1  # the adopted mechanism, from the first call (its build time is printed)

    def trace(x, ts, c):
        if not any(sig[0] == x.shape for sig in traced._traces):
            t0 = time.perf_counter()
            traced(x, ts, c)
            print(f"  lean_trace build for {tuple(x.shape)}: {time.perf_counter() - t0:.2f} s", flush=True)
        return traced(x, ts, c)

    def nocache(x, ts, c):
        unet._ctx_cache = []
        return unet(x, ts, c)

    def bf16(x, ts, c):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return unet(x, ts, c).float()

    cands = {
        "diffusers": lambda x, ts, c: ref.unet(x, ts, encoder_hidden_states=c).sample,
        "lean": lambda x, ts, c: unet(x, ts, c),
        "lean_nocache": nocache,
        "lean_nchw": lambda x, ts, c: nchw(x, ts, c),
        "lean_bf16": bf16,
        "lean_trace": trace,
    }
    cands = {k: cands[k] for k in args.candidates}
    size, ch = den.image_size, den.channels
    with torch.inference_mode():
        for B in args.batches:
            g = torch.Generator().manual_seed(B)
            x = torch.randn(2 * B, ch, size, size, generator=g)
            ts = torch.full((2 * B,), 500)
            c = torch.cat([cond.uncond.expand(B, -1, -1), cond.cond.expand(B, -1, -1)])
            want = ref.unet(x, ts, encoder_hidden_states=c).sample
            diffs = {k: float((f(x, ts, c) - want).abs().max()) for k, f in cands.items()}
            times: dict[str, list[float]] = {k: [] for k in cands}
            for _ in range(args.rounds):
                for k, f in cands.items():
                    t0 = time.perf_counter()
                    for _ in range(args.calls):
                        f(x, ts, c)
                    times[k].append((time.perf_counter() - t0) / args.calls * 1000)
            row = "  ".join(f"{k} {sorted(v)[len(v) // 2]:6.1f} ms (diff {diffs[k]:.1e})" for k, v in times.items())
            print(f"B={B:2d} (UNet batch {2 * B:2d}): {row}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load", help="one process's import + load time (JSON line)")
    p.add_argument("--model", default="embedded")
    p = sub.add_parser("calls", help="per-call time of the candidates, interleaved")
    p.add_argument("--model", default="embedded")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--calls", type=int, default=5, help="calls per candidate per round")
    p.add_argument("--candidates", nargs="+", default=["diffusers", "lean", "lean_trace", "lean_nchw", "lean_bf16"])
    args = ap.parse_args()
    {"load": cmd_load, "calls": cmd_calls}[args.cmd](args)


if __name__ == "__main__":
    main()
