"""The SJC loop's own ceiling: the embedded model's settings with a perfect "denoiser" that returns each view's
ground-truth training render, so only the optimisation (field, renderer, regularisers, step budget) limits the shape.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_oracle.py                      # the model's defaults
    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_oracle.py steps=150 blob_density=0 emptiness_weight=100

``key=value`` arguments override :class:`~sjc_engine.config.SJCConfig` settings (as ``bench_sjc_ab.py``). For each
of a cube, a torus and a cylinder it prints the field's IoU against the true shape at the mesh threshold (and at a
density of 1, which counts the haze) and the best-matching shape. The oracle's image is the training renderer's
(``training.dataset.render_shape``: Lambertian under the world light, grey background) for the cameras the loop
rendered this step, so ``D(z, sigma)`` is the clean target whatever the noise: the score is ``(target - y) / sigma``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import sjc_engine.optimize as loop  # noqa: E402
from bench.bench_sjc_ab import parse_overrides  # noqa: E402
from sjc_engine.denoisers.base import Denoiser  # noqa: E402
from sjc_engine.denoisers.loader import load_denoiser  # noqa: E402
from sjc_engine.pipeline import build_config  # noqa: E402
from training.dataset import PALETTE, colorize, render_shape  # noqa: E402
from training.metrics import yaw_iou  # noqa: E402
from training.shapes import SHAPES  # noqa: E402

PROMPTS = [("cube", "red"), ("torus", "blue"), ("cylinder", "pink")]


class TrainingRenderOracle(Denoiser):
    """``D(x, sigma)`` = the ground-truth render (in [-1, 1]) of the cameras the loop rendered last."""

    channels, image_size = 3, 32

    def __init__(self, sigmas: torch.Tensor, shape: str, color: str, cameras: list) -> None:
        self.sigmas, self.shape, self.cameras = sigmas, shape, cameras
        self.albedo = torch.tensor(PALETTE[color])[None]  # (1, 3)

    def encode_prompts(self, prompts: list[str]) -> None:
        return None

    def denoise(self, x: torch.Tensor, sigma: float, cond=None, guidance_scale: float = 1.0) -> torch.Tensor:
        cams = self.cameras[-x.shape[0]:]  # n_noise = 1: one image per view of this step
        shade_alpha, alpha = render_shape(self.shape, cams)  # (V, 1, S, S) each
        return colorize(shade_alpha, alpha, self.albedo.expand(len(cams), 3)) * 2 - 1  # (V, 3, S, S)


def main(argv: list[str]) -> None:
    _, overrides = parse_overrides(argv)
    sigmas = load_denoiser("embedded", device="cpu", half=False).sigmas
    cameras: list = []
    render = loop.render_images

    def recording_render(field, cams, *args, **kwargs):  # the loop's cameras, in order
        cameras.extend(cams)
        return render(field, cams, *args, **kwargs)

    loop.render_images = recording_render
    for shape, color in PROMPTS:
        config = build_config(f"a {color} {shape}", "embedded", device="cpu", preview_every=0, checkpoint_every=0,
                              n_noise=1, **overrides)
        t0 = time.perf_counter()
        field = loop.run_sjc(config, TrainingRenderOracle(sigmas, shape, color, cameras)).field
        wall = time.perf_counter() - t0
        for level in (config.mesh_threshold, 1.0):
            occ = field.occupancy(level)
            ious = {s: yaw_iou(occ, field.grid_points(), s)[0] for s in SHAPES}
            print(f"a {color} {shape}: density > {level:g}: IoU {ious[shape]:.3f}, best match {max(ious, key=ious.get)}, "
                  f"{int(occ.sum())} voxels; {config.steps} steps x {config.views} views in {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
