"""Wall time of a whole embedded asset as a user makes it (``sjc generate``: SJC + every export), with its quality.

Each run is the installed CLI in a fresh process (model load, SJC, field, video, mesh, previews), timed from
start to exit, with the default settings unless ``--extra`` adds flags. Beside the time, the run's field is
scored like ``bench/bench_quality.py`` does: IoU of the occupancy at the mesh threshold against the analytic
shape (best of 24 yaw angles), the same for the solid the mesh export takes, which shape it matches best, and
for a torus whether its hole is open (no occupied node in a 5 x 5 column of nodes through the centre).

    .venv/bin/python bench/bench_asset.py                          # default threads and wait policy
    .venv/bin/python bench/bench_asset.py --threads 1 2 --policy PASSIVE ACTIVE --prompts "a red cube"

``--threads``: values for ``sjc generate --threads`` (``default``: no flag, i.e. every usable core, torch's share
capped by the model's ``torch_threads``);
``--policy``: ``OMP_WAIT_POLICY`` values (``default``: the CLI's, PASSIVE). Run on an idle machine for the
figure that counts; note the load (``uptime``) printed before and after either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PROMPTS = ["a red cube", "a green sphere", "a yellow cone", "a orange cylinder", "a blue torus"]


def sjc_command() -> list[str]:
    """The ``sjc`` console script beside this Python (as installed), else ``python -m sjc_engine.cli``."""
    script = Path(sys.executable).with_name("sjc")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sjc_engine.cli"]


def score(field_path: Path, prompt: str) -> dict:
    """IoU against the prompt's shape (field and exported solid), the best-matching shape, and (torus) whether the
    hole is open (``training.metrics.field_scores``)."""
    from sjc_engine.field import VoxelField
    from sjc_engine.pipeline import build_config
    from training.metrics import field_scores

    shape = prompt.split()[-1]
    fit = field_scores(VoxelField.load(field_path), shape, build_config(prompt, "embedded").mesh_threshold)
    return {"iou": round(fit["iou"], 3), "solid_iou": round(fit["solid_iou"], 3), "best_match": fit["best"],
            "hole_open": fit["hole"]}


def run_one(prompt: str, threads: str, policy: str, seed: int, extra: list[str]) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # the CLI's --threads (or its default) decides
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    else:
        env.pop("OMP_WAIT_POLICY", None)
    out = Path(tempfile.mkdtemp(prefix="bench_asset_"))
    cmd = [*sjc_command(), "generate", prompt, "--out", str(out), "--seed", str(seed), *extra]
    if threads != "default":
        cmd += ["--threads", threads]
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        row = {"prompt": prompt, "threads": threads, "policy": policy, "wall_s": round(wall, 2)}
        row.update(score(out / "field.pt", prompt))
        return row
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    ap.add_argument("--threads", nargs="+", default=["default"], help="'default' or counts for --threads")
    ap.add_argument("--policy", nargs="+", default=["default"], help="'default', PASSIVE or ACTIVE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more sjc generate flags (last)")
    args = ap.parse_args(argv)

    print(f"load average before {os.getloadavg()}, {os.cpu_count()} CPUs, command {' '.join(sjc_command())}")
    rows = []
    for prompt in args.prompts:  # variants interleaved per prompt, so load changes hit them alike
        for threads in args.threads:
            for policy in args.policy:
                row = run_one(prompt, threads, policy, args.seed, args.extra)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"load average after {os.getloadavg()}")
    print("\n| threads | OMP_WAIT_POLICY | median wall s | worst wall s | median IoU | worst IoU | shapes matched | tori open |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for threads in args.threads:
        for policy in args.policy:
            rs = [r for r in rows if r["threads"] == threads and r["policy"] == policy]
            walls, ious = [r["wall_s"] for r in rs], [r["iou"] for r in rs]
            matched = sum(r["best_match"] == r["prompt"].split()[-1] for r in rs)
            tori = [r["hole_open"] for r in rs if r["hole_open"] is not None]
            print(f"| {threads} | {policy} | {statistics.median(walls):.1f} | {max(walls):.1f} | "
                  f"{statistics.median(ious):.3f} | {min(ious):.3f} | {matched}/{len(rs)} | "
                  f"{sum(tori)}/{len(tori)} |")


if __name__ == "__main__":
    main()
