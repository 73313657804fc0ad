"""A/B of SJC settings or embedded-model weights on the quality bench's prompts, SJC only (no exports).

For each prompt of ``bench/bench_quality.py`` it runs ``run_sjc`` with the model's defaults plus the overrides
given as ``key=value`` (any :class:`~sjc_engine.config.SJCConfig` field; ``model=PATH`` picks other weights) and
scores the field: IoU at the mesh threshold against every analytic shape (best of 24 yaw angles), whether the
prompt's shape is the best match, the IoU of the solid the mesh export takes, for a torus whether the hole is
open (``training.metrics.field_scores``; no occupied node in a 5 x 5 column of
nodes through the centre), the colour as ``bench_quality.py`` judges it, and how mottled the mesh export's
colours are (``mottle``: the spread of the vertex colours' brightness over their mean, ``chroma_sd``: their
standard deviation around the mean colour; the mesh as the export makes it, 10,000 faces, the model's training
light taken out where it declares one). Faster than the full bench (no
mesh, video or texture), so settings and weights can be compared side by side on a busy machine.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sjc_ab.py out.json steps=400
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sjc_ab.py out.json steps=400 model=.sjc/embedded_v2
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sjc_ab.py out.json seed=1 smooth_weight=0   # another seed (default 0)
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sjc_ab.py out.json seeds=0,1,2   # every prompt with each seed
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sjc_ab.py out.json shapes=torus,cube   # only these prompts
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sjc_ab.py out.json elev_range_deg=-25,80   # a pair: comma-separated

With ``seeds=`` the summary pools every (prompt, seed) run (median and worst IoU over all of them, counts out of
all of them) and adds each seed's median.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPTS = [("cube", "red"), ("cube", "cyan"), ("sphere", "green"), ("sphere", "purple"), ("cone", "yellow"),
           ("cone", "blue"), ("cylinder", "orange"), ("cylinder", "pink"), ("torus", "blue"), ("torus", "red")]


def parse_overrides(items: list[str]) -> tuple[str, list[int], list[tuple[str, str]], dict]:
    """``key=value`` strings to (model, seeds, prompts, SJCConfig overrides typed like the config's defaults)."""
    from sjc_engine.config import SJCConfig

    model, seeds, prompts, kw = "embedded", [0], PROMPTS, {}
    defaults = SJCConfig(prompt="x")
    for item in items:
        key, _, value = item.partition("=")
        if key == "model":
            model = value
            continue
        if key == "shapes":
            prompts = [p for p in PROMPTS if p[0] in value.split(",")]
            if not prompts:
                raise SystemExit(f"no bench prompt has a shape among {value!r}")
            continue
        if key in ("seed", "seeds"):
            seeds = [int(v) for v in value.split(",")]
            continue
        if not hasattr(defaults, key):
            raise SystemExit(f"unknown setting {key!r}")
        current = getattr(defaults, key)
        if isinstance(current, tuple):  # e.g. elev_range_deg=-25,80
            kw[key] = tuple(float(v) for v in value.split(","))
        else:
            kw[key] = value == "1" if isinstance(current, bool) else type(current)(value) if current is not None else float(value)
    return model, seeds, prompts, kw


def mottle(field, cfg, den) -> dict:
    """How uneven the exported mesh's colours are: ``mottle`` (brightness spread / mean of the vertex colours) and
    ``chroma_sd`` (their standard deviation around the mean colour); None for a field with no surface."""
    import numpy as np

    from sjc_engine.export.mesh import EmptyMeshError, extract_mesh

    try:
        mesh = extract_mesh(field, cfg.mesh_threshold, None, den.is_latent, target_faces=cfg.target_faces,
                            baked_light=den.baked_light)
    except EmptyMeshError:
        return {"mottle": None, "chroma_sd": None}
    c = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0  # (V, 3)
    b = c.mean(1)
    return {"mottle": round(float(b.std() / max(b.mean(), 1e-6)), 3), "chroma_sd": round(float((c - c.mean(0)).std()), 3)}


def _count(flags) -> str:
    flags = list(flags)
    return f"{sum(map(bool, flags))}/{len(flags)}"


def main(argv: list[str]) -> None:
    from sjc_engine.denoisers.loader import load_denoiser
    from sjc_engine.optimize import run_sjc
    from sjc_engine.pipeline import build_config
    from training.dataset import ProceduralDataset, nearest_color
    from training.metrics import field_scores, object_color

    out = Path(argv[0])
    model, seeds, prompts, kw = parse_overrides(argv[1:])
    den = load_denoiser(model, device="cpu", half=False)
    refs = ProceduralDataset(seed=0, views_per_shape=16, size=32).reference_colors()
    rows = []
    for (shape, color), seed in ((p, s) for s in seeds for p in prompts):
        cfg = build_config(f"a {color} {shape}", model, device="cpu", seed=seed, **kw)
        t0 = time.time()
        field = run_sjc(cfg, den).field
        wall = time.time() - t0
        fit = field_scores(field, shape, cfg.mesh_threshold)
        rgb, _ = object_color(field, den.decode, cfg.cam_radius, cfg.test_fov_deg, cfg.render_size)
        row = {"prompt": f"a {color} {shape}", "seed": seed, "iou": round(fit["iou"], 3),
               "solid_iou": round(fit["solid_iou"], 3), "best": fit["best"],
               "hole": fit["hole"], "color_ok": bool(rgb) and nearest_color(rgb, refs) == color, "sjc_s": round(wall, 1),
               **mottle(field, cfg, den)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    ious = [r["iou"] for r in rows]
    summary = {
        "overrides": kw, "model": model, "seeds": seeds, "median_iou": statistics.median(ious), "worst_iou": min(ious),
        "median_solid_iou": statistics.median(r["solid_iou"] for r in rows),
        "worst_solid_iou": min(r["solid_iou"] for r in rows),
        "median_iou_by_seed": {s: statistics.median(r["iou"] for r in rows if r["seed"] == s) for s in seeds},
        "shapes_matched": sum(r["best"] == r["prompt"].split()[-1] for r in rows),
        "runs": len(rows),
        "cubes_as_cubes": _count(r["best"] == "cube" for r in rows if r["prompt"].endswith("cube")),
        "tori_open": _count(r["hole"] for r in rows if r["hole"] is not None),
        "colours_ok": _count(r["color_ok"] for r in rows),
        "median_mottle": statistics.median(mottles) if (mottles := [r["mottle"] for r in rows if r["mottle"] is not None])
        else None,
    }
    print(json.dumps(summary))
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
