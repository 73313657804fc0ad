"""Make docs/hero.png, the README's picture: real SJC runs of the embedded model, four turntable views each.

    OMP_NUM_THREADS=2 .venv/bin/python docs/make_hero.py

Each row is one prompt run with the model's default settings (``sjc_engine.pipeline.generate``); each
column a turntable frame (RGB beside depth, as in ``turntable.mp4``), upscaled without smoothing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import imageio.v3 as iio  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from sjc_engine.denoisers.loader import load_denoiser  # noqa: E402
from sjc_engine.export.images import image_grid, save_png  # noqa: E402
from sjc_engine.pipeline import build_config, generate  # noqa: E402

PROMPTS = ("a green sphere", "a blue torus", "a orange cylinder")
FRAMES = (0, 8, 16, 24)  # of the 32-frame turntable: 0, 90, 180, 270 degrees
SCALE = 4


def main() -> None:
    denoiser = load_denoiser("embedded", device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, prompt in enumerate(PROMPTS):
            config = build_config(prompt, "embedded", seed=0, video_frames=32, device="cpu")
            out = Path(tmp) / str(i)
            generate(config, out, denoiser=denoiser, outputs=("video",))
            video = iio.imread(out / "turntable.mp4", plugin="pyav")  # (T, H, 2W, 3)
            rows.extend(video[f] for f in FRAMES)
    grid = image_grid(rows, cols=len(FRAMES), pad=2)  # (H', W', 3)
    big = Image.fromarray(np.asarray(grid)).resize((grid.shape[1] * SCALE, grid.shape[0] * SCALE), Image.NEAREST)
    path = save_png(np.asarray(big), ROOT / "docs" / "hero.png")
    print(f"wrote {path}: rows {PROMPTS}, turntable frames {FRAMES} (RGB | depth)")


if __name__ == "__main__":
    main()
