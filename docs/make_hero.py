"""Make docs/hero.png, the README's picture, from the quality bench's assets (no new SJC runs).

    .venv/bin/python bench/bench_quality.py --one-per-shape   # writes .sjc/bench_assets/
    .venv/bin/python docs/make_hero.py

Each row is one prompt of the bench (the embedded model's default settings): its ``thumbnail.png`` (the field
rendered by the engine), then its ``mesh.glb`` as a stock three.js viewer shows it (GLTFLoader with the file's
own material, a hemisphere and a key light, headless Chromium) from three sides.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from web.tools.glb_viewer import StockViewer  # noqa: E402

MAX_ROWS = 5
AZIMUTHS = (35.0, 125.0, 215.0)
TILE = 192


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--assets", type=Path, default=ROOT / ".sjc" / "bench_assets", help="bench_quality.py --assets")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "hero.png")
    p.add_argument("--names", nargs="*", default=None,
                   help="asset folders to show, e.g. green_sphere (default: every folder with a mesh.glb, at most 5)")
    a = p.parse_args(argv)
    names = a.names
    if not names:
        names = sorted(d.name for d in a.assets.iterdir() if d.is_dir()) if a.assets.is_dir() else []
    rows = [n for n in names if (a.assets / n / "mesh.glb").is_file() and (a.assets / n / "thumbnail.png").is_file()]
    rows = rows[:MAX_ROWS]
    if not rows:
        raise SystemExit(f"no assets under {a.assets}: run bench/bench_quality.py first")
    hero = Image.new("RGB", (TILE * (1 + len(AZIMUTHS)), TILE * len(rows)), "white")
    with StockViewer.launch() as viewer:
        for r, name in enumerate(rows):
            thumb = Image.open(a.assets / name / "thumbnail.png").convert("RGB").resize((TILE, TILE), Image.LANCZOS)
            hero.paste(thumb, (0, r * TILE))
            for c, azimuth in enumerate(AZIMUTHS, start=1):
                png, _ = viewer.render(a.assets / name / "mesh.glb", azimuth=azimuth, elevation=25.0, size=TILE)
                hero.paste(Image.open(io.BytesIO(png)).convert("RGB"), (c * TILE, r * TILE))
            ImageDraw.Draw(hero).text((6, r * TILE + 4), "a " + name.replace("_", " "), fill=(20, 20, 20))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    hero.save(a.out)
    print(f"wrote {a.out}: rows {rows}; thumbnail, then mesh.glb in three.js at azimuths {AZIMUTHS}")


if __name__ == "__main__":
    main()
