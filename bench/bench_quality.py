"""Quality of the embedded model's 3D assets: shape IoU against the analytic object, colour, wall time.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_quality.py --out bench/QUALITY.md

For each prompt "a <colour> <shape>" it runs the full pipeline (``sjc_engine.pipeline.generate`` with the
model's default settings: SJC, then the exports) on the CPU and measures

- IoU: the field's occupancy (``field.occupancy(config.mesh_threshold)``, the mesh export's threshold) against
  the ground-truth object at the field's grid nodes, best over 24 rotations about the vertical axis;
- colour: whether the mean decoded colour of the object's pixels (opacity > 0.5, 8 turntable views) is
  nearest to the named colour among the palette (as the training renders shade it);
- wall time of the whole asset (SJC + exports), and of SJC alone.

Targets (the issue): median IoU >= 0.6, worst >= 0.4, right colour >= 90% of prompts, <= 3 min per asset on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from training.dataset import ProceduralDataset, nearest_color  # noqa: E402
from training.metrics import object_color, yaw_iou  # noqa: E402

# two colours per shape, every colour at least once
PROMPTS: list[tuple[str, str]] = [
    ("cube", "red"), ("cube", "cyan"),
    ("sphere", "green"), ("sphere", "purple"),
    ("cone", "yellow"), ("cone", "blue"),
    ("cylinder", "orange"), ("cylinder", "pink"),
    ("torus", "blue"), ("torus", "red"),
]


def run_one(shape: str, color: str, seed: int, denoiser, refs, steps: int | None) -> dict:
    from sjc_engine.pipeline import build_config, generate

    prompt = f"a {color} {shape}"
    config = build_config(prompt, "embedded", device="cpu", seed=seed, steps=steps)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        res = generate(config, Path(tmp), denoiser=denoiser)
        wall = time.time() - t0
        from sjc_engine.field import VoxelField

        field = VoxelField.load(Path(tmp) / "field.pt")
    occ = field.occupancy(config.mesh_threshold)
    best_iou, yaw = yaw_iou(occ, field.grid_points(), shape)
    rgb, frac = object_color(field, denoiser.decode, config.cam_radius, config.test_fov_deg, config.render_size)
    got = nearest_color(rgb, refs) if rgb is not None else None
    return {
        "prompt": prompt,
        "shape": shape,
        "color": color,
        "seed": seed,
        "steps": res.steps_done,
        "iou": round(best_iou, 3),
        "yaw_deg": yaw,
        "occupied_voxels": int(occ.sum()),
        "mean_rgb": [round(c, 3) for c in rgb] if rgb else None,
        "opaque_frac": round(frac, 3),
        "nearest_color": got,
        "color_ok": got == color,
        "wall_s": round(wall, 1),
    }


def write_report(rows: list[dict], path: Path, command: str, config_defaults: dict, notes: str) -> None:
    ious = [r["iou"] for r in rows]
    walls = [r["wall_s"] for r in rows]
    ok = sum(r["color_ok"] for r in rows)
    lines = [
        "# Embedded model: 3D quality bench",
        "",
        f"Made by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), torch {torch.__version__}, CPU only.",
        "",
        "IoU: field occupancy at `config.mesh_threshold` vs the analytic object at the grid nodes, best of 24 yaw angles. "
        "Colour: mean decoded RGB of pixels with opacity > 0.5 over 8 turntable views, nearest palette colour "
        "(as the training renders shade it). Wall: the whole asset (SJC + field, video, mesh, previews).",
        "",
        "| prompt | IoU | best yaw | voxels | mean RGB | nearest colour | ok | wall (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        rgb = "-" if r["mean_rgb"] is None else ", ".join(f"{c:.2f}" for c in r["mean_rgb"])
        lines.append(
            f"| {r['prompt']} | {r['iou']:.3f} | {r['yaw_deg']:.0f} | {r['occupied_voxels']} | {rgb} | "
            f"{r['nearest_color']} | {'yes' if r['color_ok'] else 'no'} | {r['wall_s']:.0f} |"
        )
    lines += [
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| median IoU | {statistics.median(ious):.3f} | >= 0.6 |",
        f"| worst IoU | {min(ious):.3f} | >= 0.4 |",
        f"| right colour | {ok}/{len(rows)} ({100 * ok / len(rows):.0f}%) | >= 90% |",
        f"| median wall per asset | {statistics.median(walls):.0f} s | <= 180 s |",
        f"| worst wall per asset | {max(walls):.0f} s | <= 180 s |",
        "",
        "Settings (the model's `sjc_model.json` defaults):",
        "",
        "```json",
        json.dumps(config_defaults, indent=1),
        "```",
        "",
    ]
    if notes:
        lines += [notes, ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "QUALITY.md")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the model's default steps")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--notes", type=str, default="", help="free text appended to the report")
    a = p.parse_args(argv)

    from sjc_engine.catalog import resolve_model
    from sjc_engine.denoisers.loader import load_denoiser

    info = resolve_model("embedded")
    denoiser = load_denoiser("embedded", device="cpu", half=False)
    refs = ProceduralDataset(seed=0, views_per_shape=16, size=32).reference_colors()
    rows = []
    for shape, color in PROMPTS[: a.limit]:
        row = run_one(shape, color, a.seed, denoiser, refs, a.steps)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
    command = "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "") + " .venv/bin/python bench/bench_quality.py " + " ".join(argv or sys.argv[1:])
    write_report(rows, a.out, command.strip(), info.defaults, a.notes)
    print(a.out.read_text())


if __name__ == "__main__":
    main()
