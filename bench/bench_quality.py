"""Quality of the embedded model's 3D assets: shape IoU against the analytic object, colour, wall time.

    .venv/bin/python bench/bench_quality.py --out bench/QUALITY.md    # threads as the CLI sets them

For each prompt "a <colour> <shape>" it runs the full pipeline (``sjc_engine.pipeline.generate`` with the
model's default settings: SJC, then the exports) on the CPU and measures

- IoU: the field's occupancy (``field.occupancy(config.mesh_threshold)``, the mesh export's threshold) against
  the ground-truth object at the field's grid nodes, best over 24 rotations about the vertical axis; the same
  for the solid the mesh export takes (``solid_occupancy``: small pieces dropped, enclosed cavities filled, so
  a hollow shell counts as the volume its mesh encloses); which shape the field matches best; for a torus,
  whether its hole is open (all from ``training.metrics.field_scores``);
- colour: whether the mean decoded colour of the object's pixels (opacity > 0.5, 8 turntable views) is
  nearest to the named colour among the palette (as the training renders shade it);
- the final mesh, after the whole export (``mesh.stl``: the same surface as ``mesh.glb``, without UV seams):
  volume IoU and Chamfer distance against the analytic shape turned by the field's best yaw
  (:mod:`sjc_engine.export.quality`), faces, closed or not, pieces;
- wall time of the whole asset (SJC + exports), and of the exports alone;

and renders every ``mesh.glb`` in a stock three.js viewer (headless Chromium, the file's own material, a
hemisphere and a key light) into a grid (``--views``). The assets are kept under ``--assets`` for
``docs/make_hero.py``.

Targets (issue 11): median IoU >= 0.6, worst >= 0.45, every torus open, every cube matched best as a cube, right
colour >= 90% of prompts, an asset in <= 10 s on 2 idle cores.
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

from sjc_engine.threads import apply_openmp_defaults  # noqa: E402

apply_openmp_defaults()  # as the CLI does, before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402

from sjc_engine import parallel  # noqa: E402
from sjc_engine.callbacks import Callbacks  # noqa: E402
from sjc_engine.export.quality import chamfer, mesh_iou  # noqa: E402
from training.dataset import ProceduralDataset, nearest_color  # noqa: E402
from training.metrics import field_scores, object_color  # noqa: E402
from training.shapes import rotate_y, sdf  # noqa: E402

# two colours per shape, every colour at least once
PROMPTS: list[tuple[str, str]] = [
    ("cube", "red"), ("cube", "cyan"),
    ("sphere", "green"), ("sphere", "purple"),
    ("cone", "yellow"), ("cone", "blue"),
    ("cylinder", "orange"), ("cylinder", "pink"),
    ("torus", "blue"), ("torus", "red"),
]


class ExportClock(Callbacks):
    """Notes when the export starts (``generate`` calls ``on_export`` after the last step)."""

    def __init__(self) -> None:
        self.started: float | None = None

    def on_export(self, step: int) -> None:
        self.started = time.time()


def mesh_scores(path: Path, shape: str, yaw_deg: float) -> dict:
    """IoU and Chamfer of the exported mesh against ``shape`` turned by ``yaw_deg`` (the field's best yaw)."""
    if not path.is_file():
        return {"mesh_iou": None, "chamfer": None, "faces": 0, "watertight": False, "pieces": 0, "volume": None}
    mesh = trimesh.load(path, force="mesh")

    def shape_sdf(p: np.ndarray) -> np.ndarray:
        return sdf(shape, rotate_y(torch.from_numpy(p).float(), np.radians(yaw_deg))).numpy()

    return {
        "mesh_iou": round(mesh_iou(mesh, shape_sdf, pitch=0.01), 3),
        "chamfer": round(chamfer(mesh, shape_sdf, n=20_000), 4),
        "faces": len(mesh.faces),
        "watertight": bool(mesh.is_watertight),
        "pieces": len(mesh.split(only_watertight=False)),
        "volume": round(float(mesh.volume), 4),
    }


def run_one(shape: str, color: str, seed: int, denoiser, refs, steps: int | None, assets: Path) -> dict:
    from sjc_engine.pipeline import build_config, generate

    prompt = f"a {color} {shape}"
    config = build_config(prompt, "embedded", device="cpu", seed=seed, steps=steps)
    keep = assets / f"{color}_{shape}"
    keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clock = ExportClock()
        t0 = time.time()
        res = generate(config, Path(tmp), denoiser=denoiser, callbacks=clock)
        wall = time.time() - t0
        export_s = round(time.time() - clock.started, 1) if clock.started else None
        from sjc_engine.field import VoxelField

        field = VoxelField.load(Path(tmp) / "field.pt")
        for name in ("mesh.glb", "mesh.stl", "thumbnail.png"):
            if (Path(tmp) / name).is_file():
                (keep / name).write_bytes((Path(tmp) / name).read_bytes())
    fit = field_scores(field, shape, config.mesh_threshold)
    yaw = fit["yaw_deg"]
    scores = mesh_scores(keep / "mesh.stl", shape, yaw)
    rgb, frac = object_color(field, denoiser.decode, config.cam_radius, config.test_fov_deg, config.render_size)
    got = nearest_color(rgb, refs) if rgb is not None else None
    return {
        "prompt": prompt,
        "shape": shape,
        "color": color,
        "seed": seed,
        "steps": res.steps_done,
        "iou": round(fit["iou"], 3),
        "solid_iou": round(fit["solid_iou"], 3),
        "best_shape": fit["best"],
        "hole": fit["hole"],
        "yaw_deg": yaw,
        "occupied_voxels": fit["occupied"],
        "mean_rgb": [round(c, 3) for c in rgb] if rgb else None,
        "opaque_frac": round(frac, 3),
        "nearest_color": got,
        "color_ok": got == color,
        **scores,
        "glb_bytes": (keep / "mesh.glb").stat().st_size if (keep / "mesh.glb").is_file() else 0,
        "wall_s": round(wall, 1),
        "export_s": export_s,
    }


def render_views(rows: list[dict], assets: Path, path: Path, size: int = 192) -> Path:
    """A grid of browser-rendered views of each prompt's ``mesh.glb``: one row per prompt, front and back."""
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(ROOT))
    from web.tools.glb_viewer import StockViewer

    tiles = []
    with StockViewer.launch() as viewer:
        for r in rows:
            glb = assets / f"{r['color']}_{r['shape']}" / "mesh.glb"
            for azimuth in (35.0, 215.0):
                if glb.is_file():
                    png, _ = viewer.render(glb, azimuth=azimuth, elevation=25.0, size=size)
                    tile = Image.open(__import__("io").BytesIO(png)).convert("RGB")
                else:
                    tile = Image.new("RGB", (size, size), "white")
                if azimuth == 35.0:
                    ImageDraw.Draw(tile).text((4, 4), r["prompt"], fill=(0, 0, 0))
                tiles.append(tile)
    cols = 4
    rows_n = -(-len(tiles) // cols)
    grid = Image.new("RGB", (cols * size, rows_n * size), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % cols) * size, (i // cols) * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def write_report(rows: list[dict], path: Path, command: str, config_defaults: dict, notes: str) -> None:
    ious = [r["iou"] for r in rows]
    solid = [r["solid_iou"] for r in rows]
    tori = [r["hole"] for r in rows if r["shape"] == "torus"]
    cubes = [r["best_shape"] == "cube" for r in rows if r["shape"] == "cube"]
    walls = [r["wall_s"] for r in rows]
    ok = sum(r["color_ok"] for r in rows)
    mious = [r["mesh_iou"] for r in rows if r["mesh_iou"] is not None]
    chs = [r["chamfer"] for r in rows if r["chamfer"] is not None]
    lines = [
        "# Embedded model: 3D quality bench",
        "",
        f"Made by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"({parallel.workers()} threads, {torch.get_num_threads()} of them torch's), torch {torch.__version__}, CPU only.",
        "",
        "IoU: field occupancy at `config.mesh_threshold` vs the analytic object at the grid nodes, best of 24 yaw angles; "
        "solid IoU: the same for the solid the mesh export takes (small pieces dropped, enclosed cavities filled); "
        "best match: the shape the field's occupancy fits best; hole: a torus's centre column empty. "
        "Colour: mean decoded RGB of pixels with opacity > 0.5 over 8 turntable views, nearest palette colour "
        "(as the training renders shade it). Mesh IoU / Chamfer: the exported mesh (after the whole export) against "
        "the analytic object turned by the best yaw (volume IoU, voxelised at 0.01; symmetric Chamfer, mean of both "
        "directions, world units; the object is ~0.9 wide). Wall: the whole asset (SJC + field, video, mesh, previews); "
        "export: the exports alone.",
        "",
        "| prompt | IoU | solid IoU | best match | hole | best yaw | mesh IoU | Chamfer | faces | closed | pieces | GLB (kB) "
        "| mean RGB | nearest colour | ok | wall (s) | export (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        rgb = "-" if r["mean_rgb"] is None else ", ".join(f"{c:.2f}" for c in r["mean_rgb"])
        miou = "-" if r["mesh_iou"] is None else f"{r['mesh_iou']:.3f}"
        ch = "-" if r["chamfer"] is None else f"{r['chamfer']:.4f}"
        lines.append(
            f"| {r['prompt']} | {r['iou']:.3f} | {r['solid_iou']:.3f} | {r['best_shape']} | "
            f"{'-' if r['hole'] is None else ('open' if r['hole'] else 'closed')} | {r['yaw_deg']:.0f} | {miou} | {ch} | {r['faces']} | "
            f"{'yes' if r['watertight'] else 'no'} | {r['pieces']} | {r['glb_bytes'] / 1000:.0f} | {rgb} | "
            f"{r['nearest_color']} | {'yes' if r['color_ok'] else 'no'} | {r['wall_s']:.0f} | {r['export_s']} |"
        )
    lines += [
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| median IoU (field / solid) | {statistics.median(ious):.3f} / {statistics.median(solid):.3f} | >= 0.6 |",
        f"| median mesh IoU | {statistics.median(mious):.3f} | - |" if mious else "| median mesh IoU | - | - |",
        f"| median Chamfer | {statistics.median(chs):.4f} | - |" if chs else "| median Chamfer | - | - |",
        f"| closed meshes in one piece | {sum(r['watertight'] and r['pieces'] == 1 for r in rows)}/{len(rows)} | all |",
        f"| worst IoU (field / solid) | {min(ious):.3f} / {min(solid):.3f} | >= 0.45 |",
        f"| tori with an open hole | {sum(tori)}/{len(tori)} | all |",
        f"| cubes matched best as cubes | {sum(cubes)}/{len(cubes)} | all |",
        f"| right colour | {ok}/{len(rows)} ({100 * ok / len(rows):.0f}%) | >= 90% |",
        f"| median wall per asset | {statistics.median(walls):.0f} s | <= 10 s |",
        f"| worst wall per asset | {max(walls):.0f} s | <= 10 s |",
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
    p.add_argument("--one-per-shape", action="store_true", help="only the first colour of each shape (5 prompts)")
    p.add_argument("--assets", type=Path, default=ROOT / ".sjc" / "bench_assets", help="where the GLBs are kept")
    p.add_argument("--views", type=Path, default=ROOT / "bench" / "quality_views.png",
                   help="grid of browser-rendered GLB views (default bench/quality_views.png)")
    p.add_argument("--notes", type=str, default="", help="free text appended to the report")
    p.add_argument("--rescore", action="store_true",
                   help="no runs: re-score the meshes kept under --assets for the rows in --json, rewrite the report")
    a = p.parse_args(argv)
    args = list(argv or sys.argv[1:])
    if "--notes" in args:  # the notes go into the report, not into its command line
        i = args.index("--notes")
        del args[i : i + 2]
    command = ".venv/bin/python bench/bench_quality.py " + " ".join(args)
    if a.rescore:
        from sjc_engine.catalog import resolve_model

        rows = json.loads(a.json.read_text())
        for r in rows:
            r.update(mesh_scores(a.assets / f"{r['color']}_{r['shape']}" / "mesh.stl", r["shape"], r["yaw_deg"]))
        a.json.write_text(json.dumps(rows, indent=1))
        write_report(rows, a.out, command.strip(), resolve_model("embedded").defaults, a.notes)
        print(f"views: {render_views(rows, a.assets, a.views)}")
        return

    from sjc_engine.catalog import resolve_model
    from sjc_engine.denoisers.loader import load_denoiser

    from sjc_engine.threads import set_torch_threads

    info = resolve_model("embedded")
    set_torch_threads(torch_threads=info.torch_threads)  # the CLI's thread defaults (SJC_THREADS, the model's cap)
    denoiser = load_denoiser("embedded", device="cpu", half=False)
    refs = ProceduralDataset(seed=0, views_per_shape=16, size=32).reference_colors()
    rows = []
    prompts = [pc for i, pc in enumerate(PROMPTS) if not a.one_per_shape or i % 2 == 0]
    for shape, color in prompts[: a.limit]:
        row = run_one(shape, color, a.seed, denoiser, refs, a.steps, a.assets)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
    write_report(rows, a.out, command.strip(), info.defaults, a.notes)
    print(f"views: {render_views(rows, a.assets, a.views)}")
    print(a.out.read_text())


if __name__ == "__main__":
    main()
