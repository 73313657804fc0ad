"""Seconds per optimiser step of the renderer (render forward, backward, Adamax), ours against the reference's
algorithm re-implemented and run in this same process.

Settings: the reference's (100^3 grid, 64 x 64 render, 4 channels) and the embedded model's (64^3, 32 x 32,
3 channels). States:

- ``early``: a random density (raw ~ N(0, 1)): every sample carries weight, nothing can be skipped;
- ``converged``: an opaque ball (radius 0.5, a sample's optical thickness ~0.3-0.45) in empty space, the state
  a run spends most of its steps in; ours rebuilds its occupancy grid every 8 steps (inside the timed steps),
  as the SJC loop does (:mod:`sjc_engine.occupancy`); "ours, no skipping" is the same without the grid.

Ours steps with the loop's optimiser (:class:`~sjc_engine.native.adamax.FusedAdamax`), the reference
algorithm with ``torch.optim.Adamax`` (same values); ``--torch-adamax`` adds "ours, torch Adamax" (ours with
the reference's optimiser) to every state.

The reference algorithm (``dense_reference_render``: ``F.grid_sample`` on every sample of a (k, n) tensor,
autograd, pals-ttic/sjc ``voxnerf/render.py``) and ours run step by step in turn (interleaved), so load from
other processes hits both alike; the ratio is the figure to read (its absolute time matched the real
reference's ratio to ours when both were run here). Median over repeats after warm-up, on CPU and on CUDA when
present (synchronised around each phase). Each line gives wall-clock medians per phase and the median CPU time
of a step (``time.process_time``: every thread of this process, less sensitive to other processes).

    .venv/bin/python bench/bench_render.py [--threads 1] [--repeats 9] [--states early converged] [--torch-adamax]

``SJC_NATIVE=0`` times the torch fallback path instead of the C kernels (see ``sjc_engine/native/``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sjc_engine.cameras import sample_camera  # noqa: E402
from sjc_engine.field import VoxelField  # noqa: E402
from sjc_engine.native.adamax import FusedAdamax  # noqa: E402
from sjc_engine.native import native_lib  # noqa: E402
from sjc_engine.renderer import ray_box, render_rays  # noqa: E402

SETTINGS = {"reference": (100, 64, 4), "embedded": (64, 32, 3)}
STATES = ("early", "converged")
BALL_RADIUS, BALL_RAW, EMPTY_RAW = 0.5, 30.0, -10.0  # converged: sigma ~ 29 inside, ~2e-5 outside
REFRESH_EVERY = 8  # steps between occupancy refreshes of ours in the converged state (the loop's default)


def make_field(state: str, n: int, channels: int, device: torch.device) -> VoxelField:
    """The field of a state (see the module docstring), reference density shift -1, features ~ N(0, 1)."""
    torch.manual_seed(0)
    field = VoxelField(n, channels).to(device)
    with torch.no_grad():
        if state == "early":
            field.density.normal_()
        else:
            r = field.grid_points().norm(dim=-1)
            field.density[0] = torch.where(r < BALL_RADIUS, BALL_RAW, EMPTY_RAW)
    return field


def dense_reference_render(field: VoxelField, origins: torch.Tensor, dirs: torch.Tensor, step_ratio: float = 0.5):
    """The reference's algorithm (voxnerf/render.py): dense (k, n) samples, grid_sample, cumprod, masks."""
    step = step_ratio * field.voxel_size
    t_min, t_max = ray_box(origins, dirs, field.bbox)
    hit = t_max > t_min
    o, d, t_min, t_max = origins[hit], dirs[hit], t_min[hit], t_max[hit]
    k = int(((t_max - t_min).max() / step).item()) + 1
    ticks = step * torch.arange(k, device=o.device).view(k, 1, 1)
    dists = t_min.view(-1, 1) + ticks  # (k, n, 1)
    pts = o + d * dists  # (k, n, 3)
    mask = (ticks < (t_max - t_min).view(-1, 1)).squeeze(-1)  # (k, n)

    def lookup(grid: torch.Tensor, p: torch.Tensor) -> torch.Tensor:  # (C, N, N, N), (P, 3) -> (C, P)
        g = (p / field.bbox)[:, [2, 1, 0]].view(1, -1, 1, 1, 3)
        return F.grid_sample(grid[None], g, align_corners=True).view(grid.shape[0], -1)

    sigma = torch.zeros(k, o.shape[0], device=o.device)
    sigma[mask] = field.activate(lookup(field.density, pts[mask])[0])
    alpha = 1 - torch.exp(-sigma * step)
    trans = torch.ones_like(alpha)
    trans[1:] = (1 - alpha).cumprod(dim=0)[:-1]
    w = alpha * trans
    m2 = w > 1e-4
    colors = torch.zeros(k, o.shape[0], field.channels, device=o.device)
    colors[m2] = lookup(field.features, pts[m2]).T
    w = w.view(k, -1, 1)
    return (w * colors).sum(0) + (1 - w.sum(0)) * field.background(d)


class _Step:
    """One implementation's field, optimiser and timings; :meth:`run` times one optimiser step."""

    def __init__(self, render, field: VoxelField, device: torch.device, refresh_every: int = 0,
                 optimizer: type[torch.optim.Adamax] = FusedAdamax) -> None:
        self.render, self.field, self.device = render, field, device
        self.opt = optimizer(field.param_groups(0.05, 1e-4))
        self.rows: list[tuple[float, ...]] = []
        self.refresh_every, self.calls = refresh_every, 0

    def _clock(self) -> tuple[float, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter(), time.process_time()

    def run(self, o: torch.Tensor, d: torch.Tensor, keep: bool) -> None:
        w0, c0 = self._clock()
        if self.refresh_every and self.calls % self.refresh_every == 0:
            self.field.refresh_occupancy(0.5 * self.field.voxel_size)
        self.calls += 1
        loss = self.render(self.field, o, d).square().mean()
        w1, c1 = self._clock()
        loss.backward()
        w2, c2 = self._clock()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        w3, c3 = self._clock()
        if keep:  # wall: forward, backward, adamax, total; CPU (all threads of the process): total
            self.rows.append((w1 - w0, w2 - w1, w3 - w2, w3 - w0, c3 - c0))

    def medians(self) -> dict:
        cols = [statistics.median(c) for c in zip(*self.rows)]
        return dict(zip(("forward", "backward", "optimizer", "total", "cpu"), cols))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the target's setting)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--states", nargs="+", default=list(STATES), choices=list(STATES))
    ap.add_argument("--torch-adamax", action="store_true", help='add "ours, torch Adamax" (the optimiser alone)')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, devices {[str(d) for d in devices]}, "
          f"native trilinear kernels: {native_lib() is not None}, load average {os.getloadavg()}")
    for device in devices:
        for name in args.settings:
            n, size, channels = SETTINGS[name]
            rng = np.random.default_rng(0)
            rays = []
            for _ in range(4):
                o, d = sample_camera(rng, size).rays(device=device)
                rays.append((o.reshape(-1, 3), d.reshape(-1, 3)))
            for state in args.states:
                field = make_field(state, n, channels, device)
                twin = copy.deepcopy(field)  # same starting values, its own optimiser
                refresh = REFRESH_EVERY if state == "converged" else 0
                runs = {
                    "ours": _Step(lambda f, o, d: render_rays(f, o, d).features, field, device, refresh),
                    "reference algorithm": _Step(dense_reference_render, twin, device, optimizer=torch.optim.Adamax),
                }
                if args.torch_adamax:
                    runs["ours, torch Adamax"] = _Step(lambda f, o, d: render_rays(f, o, d).features,
                                                       copy.deepcopy(field), device, refresh, torch.optim.Adamax)
                if refresh:  # what skipping itself buys: ours without an occupancy grid
                    runs["ours, no skipping"] = _Step(lambda f, o, d: render_rays(f, o, d).features,
                                                      copy.deepcopy(field), device)
                for i in range(args.warmup + args.repeats):  # interleaved, so load changes hit both alike
                    for step in runs.values():
                        step.run(*rays[i % len(rays)], keep=i >= args.warmup)
                ours = runs["ours"].medians()
                for label, step in runs.items():
                    r = step.medians()
                    line = (
                        f"{device.type:4s} {name:9s} {state:9s} {n}^3 {size}x{size} C={channels} {label:19s} "
                        f"forward {r['forward']:.4f}  backward {r['backward']:.4f}  adamax {r['optimizer']:.4f}  "
                        f"total {r['total']:.4f} s  (CPU {r['cpu']:.4f} s)"
                    )
                    if label != "ours":  # (label width 19: "ours, torch Adamax" fits)
                        wall, cpu = r["total"] / ours["total"], r["cpu"] / ours["cpu"]
                        line += f"   -> ours faster by {wall:.1f}x wall, {cpu:.1f}x CPU"
                    print(line, flush=True)
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
