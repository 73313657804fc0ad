"""``sjc generate`` end to end with a tiny random SD pipeline: build it, run the CLI in a subprocess, time it.

Writes a JSON file with the wall time, the exit code and the files written (bench/gpu_check.sh's last stage).

    python bench/gpu/run_generate.py --device cuda --steps 200 --sample-size 64 --work out/gpu_check/gen --out g.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    p.add_argument("--steps", type=int, default=200, help="SJC steps (default 200)")
    p.add_argument("--sample-size", type=int, default=64, help="the tiny UNet's latent side (default 64, as SD 1.5)")
    p.add_argument("--grid", type=int, default=100, help="voxels per side (default 100, the reference's)")
    p.add_argument("--video-frames", type=int, default=24, help="turntable frames (default 24)")
    p.add_argument("--work", type=Path, required=True, help="folder for the model and the run's outputs")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = p.parse_args(argv)

    from tests.fixtures.models import build_tiny_sd

    model = build_tiny_sd(args.work / "tiny-sd", sample_size=args.sample_size)
    run_dir = args.work / "run"
    cmd = [sys.executable, "-m", "sjc_engine.cli", "generate", "a red cube", "--model", str(model),
           "--steps", str(args.steps), "--grid", str(args.grid), "--device", args.device, "--out", str(run_dir),
           "--preview-every", str(max(args.steps // 4, 1)), "--checkpoint-every", str(max(args.steps // 2, 1)),
           "--video-frames", str(args.video_frames)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    files = {str(f.relative_to(run_dir)): f.stat().st_size for f in sorted(run_dir.rglob("*")) if f.is_file()}
    res = {
        "command": " ".join(cmd[1:]), "rc": proc.returncode, "wall_s": wall, "steps": args.steps,
        "sample_size": args.sample_size, "grid": args.grid, "files": files,
        "stdout_tail": proc.stdout[-1500:], "stderr_tail": proc.stderr[-1500:],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "stderr_tail"}, indent=2))
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
