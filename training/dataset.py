"""Procedural multi-view training data for the embedded model, deterministic from a seed.

Each shape of :mod:`.shapes` is sphere-traced (batched, torch) from cameras drawn with
:func:`sjc_engine.cameras.sample_camera` under the same distribution the engine samples with this model
(:data:`CAMERA`), at ``2 * size`` pixels and box-downsampled to ``size`` for anti-aliasing.
Shading is Lambertian under a fixed world light plus ambient, so a view-independent 3D colour field can
explain every view. Since each object has one flat colour, a view is stored colour-free as
``(shade * alpha, alpha)`` and coloured on the fly: ``rgb = albedo * shade_alpha + background * (1 - alpha)``,
which is exact after downsampling (it is linear). Captions come from :func:`sjc_engine.cameras.view_prompt`
("front view of a red cube") and sometimes the bare prompt ("a red cube").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sjc_engine.cameras import Camera, sample_camera, view_prefix

from .shapes import SHAPES, get_sdf

# Named colours (linear-ish RGB in [0, 1]) with distinct hues.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.05),
    "yellow": (0.93, 0.86, 0.10),
    "green": (0.10, 0.70, 0.20),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.12, 0.25, 0.92),
    "purple": (0.55, 0.15, 0.78),
    "pink": (0.96, 0.45, 0.72),
}
BACKGROUND: tuple[float, float, float] = (0.85, 0.85, 0.85)
LIGHT_DIR: tuple[float, float, float] = (0.35, 1.0, 0.45)  # towards the light, world frame
AMBIENT, DIFFUSE = 0.40, 0.60


@dataclass(frozen=True)
class CameraDistribution:
    """The camera distribution of the training views (and of the engine's SJC runs with this model)."""

    radius: float = 1.8
    elev_range_deg: tuple[float, float] = (-10.0, 80.0)
    fov_range_deg: tuple[float, float] = (45.0, 60.0)


CAMERA = CameraDistribution()


def prompt_for(color: str, shape: str) -> str:
    """The bare prompt, e.g. ``"a red cube"``."""
    return f"a {color} {shape}"


BOUND_RADIUS = 0.6  # every shape lies inside this ball; rays that miss it are background


@torch.no_grad()
def sphere_trace(
    shape: str,
    origins: Tensor,
    dirs: Tensor,
    iters: int = 48,
    eps: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Sphere-trace unit rays (R, 3) against ``shape``: returns (hit mask (R,), unit normals (R, 3)).

    Only rays through the bounding ball are traced, starting where they enter it; rays that converged
    (distance < ``eps``) or left the ball are dropped from the active set.
    """
    fn = get_sdf(shape)
    R = origins.shape[0]
    b = (origins * dirs).sum(-1)
    disc = b**2 - ((origins**2).sum(-1) - BOUND_RADIUS**2)
    idx = torch.nonzero(disc > 0).squeeze(-1)  # rays through the ball
    root = disc[idx].clamp(min=0).sqrt()
    t = -b[idx] - root  # entry
    t_far = -b[idx] + root  # exit
    o, d = origins[idx], dirs[idx]
    active = torch.arange(idx.numel())
    for _ in range(iters):
        if active.numel() == 0:
            break
        dist = fn(o[active] + t[active, None] * d[active])
        t[active] = t[active] + dist
        keep = (dist.abs() > eps) & (t[active] < t_far[active])
        active = active[keep]
    p = o + t[:, None] * d  # (r, 3)
    hit_local = (fn(p).abs() < 10 * eps) & (t < t_far)
    h = 1e-3
    offsets = torch.eye(3, dtype=p.dtype) * h  # (3, 3)
    grad = torch.stack([fn(p + offsets[k]) - fn(p - offsets[k]) for k in range(3)], dim=-1)  # (r, 3)
    hit = torch.zeros(R, dtype=torch.bool)
    hit[idx] = hit_local
    normals = torch.zeros(R, 3, dtype=origins.dtype)
    normals[idx] = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return hit, normals


@torch.no_grad()
def render_shape(shape: str, cameras: list[Camera], supersample: int = 2, chunk: int = 32) -> tuple[Tensor, Tensor]:
    """Render ``shape`` from ``cameras`` (all the same size S): (shade_alpha, alpha), each (V, 1, S, S).

    Rays are traced at ``supersample * S`` and box-filtered down to ``S``; ``chunk`` cameras at a time.
    """
    light = torch.tensor(LIGHT_DIR)
    light = light / light.norm()
    shade_alpha, alpha = [], []
    for start in range(0, len(cameras), chunk):
        group = cameras[start : start + chunk]
        rays = []
        for cam in group:
            big = Camera(cam.c2w, cam.fov_deg, cam.height * supersample, cam.width * supersample,
                         cam.azimuth_deg, cam.elevation_deg, cam.radius)
            rays.append(big.rays())  # (H, W, 3) each
        H, W = rays[0][0].shape[:2]
        o = torch.stack([r[0] for r in rays]).reshape(-1, 3)  # (V*H*W, 3)
        d = torch.stack([r[1] for r in rays]).reshape(-1, 3)  # (V*H*W, 3)
        hit, n = sphere_trace(shape, o, d)
        shade = AMBIENT + DIFFUSE * (n @ light).clamp(min=0)  # (R,)
        a = hit.float()
        shade_alpha.append((shade * a).reshape(len(group), 1, H, W))
        alpha.append(a.reshape(len(group), 1, H, W))
    sa = F.avg_pool2d(torch.cat(shade_alpha), supersample)  # (V, 1, S, S)
    al = F.avg_pool2d(torch.cat(alpha), supersample)  # (V, 1, S, S)
    return sa, al


@dataclass
class ViewSet:
    """Colour-free renders of one shape: ``shade_alpha``/``alpha`` (V, 1, S, S) and the view captions' prefixes."""

    shape: str
    shade_alpha: Tensor
    alpha: Tensor
    azimuth_deg: np.ndarray
    elevation_deg: np.ndarray
    fov_deg: np.ndarray


def render_views(shape: str, n_views: int, seed: int, size: int = 32, camera: CameraDistribution = CAMERA) -> ViewSet:
    """``n_views`` random views of ``shape``, deterministic from ``seed``."""
    rng = np.random.default_rng([seed, sorted(SHAPES).index(shape)])
    cams = [sample_camera(rng, size, camera.radius, camera.elev_range_deg, camera.fov_range_deg) for _ in range(n_views)]
    sa, al = render_shape(shape, cams)
    return ViewSet(
        shape=shape,
        shade_alpha=sa,
        alpha=al,
        azimuth_deg=np.array([c.azimuth_deg for c in cams]),
        elevation_deg=np.array([c.elevation_deg for c in cams]),
        fov_deg=np.array([c.fov_deg for c in cams]),
    )


def _cached_views(shape: str, n_views: int, seed: int, size: int, cache_dir: str | Path | None) -> ViewSet:
    if cache_dir is None:
        return render_views(shape, n_views, seed, size)
    path = Path(cache_dir) / f"views_{shape}_s{seed}_n{n_views}_{size}_{_camera_tag()}.pt"
    if path.is_file():
        return ViewSet(**torch.load(path, weights_only=False))
    vs = render_views(shape, n_views, seed, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(asdict(vs), tmp)
    tmp.replace(path)
    return vs


def _camera_tag() -> str:
    c = CAMERA
    return f"r{c.radius:g}_e{c.elev_range_deg[0]:g}-{c.elev_range_deg[1]:g}_f{c.fov_range_deg[0]:g}-{c.fov_range_deg[1]:g}"


def colorize(shade_alpha: Tensor, alpha: Tensor, albedo: Tensor, background: Tensor | None = None) -> Tensor:
    """Images in [-1, 1], (B, 3, S, S), from (B, 1, S, S) renders, (B, 3) albedos and a background colour in
    [0, 1]: (3,) for all images or (B, 3) one each (default :data:`BACKGROUND`)."""
    bg = torch.tensor(BACKGROUND) if background is None else background
    bg = bg.expand(albedo.shape)  # (B, 3)
    rgb = albedo[:, :, None, None] * shade_alpha + bg[:, :, None, None] * (1 - alpha)  # (B, 3, S, S)
    return rgb.clamp(0, 1) * 2 - 1


class ProceduralDataset:
    """Shapes x colours x views, with captions; batches are deterministic given a ``torch.Generator``.

    Args:
        seed: seeds the cameras (views) of every shape.
        views_per_shape: rendered views per shape (colours are applied on the fly, so the dataset holds
            ``len(shapes) * len(colors) * views_per_shape`` distinct images).
        size: image side in pixels (32).
        shapes, colors: subsets of :data:`.shapes.SHAPES` and :data:`PALETTE` (default: all).
        bare_prompt_prob: probability of a caption without the view prefix.
        color_jitter: per-channel multiplicative albedo jitter (uniform +-), 0 for exact colours.
        random_background_prob: probability that an image's background is a random colour (uniform in
            [0, 1]^3) instead of :data:`BACKGROUND`. A model that has seen varied backgrounds can tell a
            background-coloured sheet from empty space once the SJC renders vary theirs (``SJCConfig.background
            = "random"``); 0 (the shipped model's training) keeps the grey.
        cache_dir: where rendered views are cached (``views_{shape}_s{seed}_n{views}_{size}.pt``); None: no cache.
    """

    def __init__(
        self,
        seed: int = 0,
        views_per_shape: int = 2000,
        size: int = 32,
        shapes: list[str] | None = None,
        colors: list[str] | None = None,
        bare_prompt_prob: float = 0.2,
        color_jitter: float = 0.05,
        random_background_prob: float = 0.0,
        cache_dir: str | Path | None = None,
    ) -> None:
        if not 0.0 <= random_background_prob <= 1.0:
            raise ValueError(f"random_background_prob must be in [0, 1], got {random_background_prob}")
        self.shapes = list(shapes or SHAPES)
        self.colors = list(colors or PALETTE)
        for c in self.colors:
            if c not in PALETTE:
                raise KeyError(f"unknown colour {c!r}; known: {list(PALETTE)}")
        self.size = size
        self.bare_prompt_prob = bare_prompt_prob
        self.color_jitter = color_jitter
        self.random_background_prob = random_background_prob
        self.views = {s: _cached_views(s, views_per_shape, seed, size, cache_dir) for s in self.shapes}
        self.albedos = torch.tensor([PALETTE[c] for c in self.colors])  # (K, 3)
        self.views_per_shape = views_per_shape

    def __len__(self) -> int:
        return len(self.shapes) * len(self.colors) * self.views_per_shape

    def caption(self, shape: str, color: str, view: int, bare: bool) -> str:
        """Caption of one view: ``"side view of a red cube"``, or ``"a red cube"`` when ``bare``."""
        p = prompt_for(color, shape)
        if bare:
            return p
        vs = self.views[shape]
        # == sjc_engine.cameras.view_prompt(p, camera) for the camera of this view
        return f"{view_prefix(float(vs.azimuth_deg[view]), float(vs.elevation_deg[view]))} {p}"

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, list[str]]:
        """A random batch: images (B, 3, S, S) in [-1, 1] and their captions."""
        si = torch.randint(len(self.shapes), (batch_size,), generator=generator)
        ci = torch.randint(len(self.colors), (batch_size,), generator=generator)
        vi = torch.randint(self.views_per_shape, (batch_size,), generator=generator)
        bare = torch.rand(batch_size, generator=generator) < self.bare_prompt_prob
        jitter = 1 + self.color_jitter * (2 * torch.rand(batch_size, 3, generator=generator) - 1)
        sa, al, caps = [], [], []
        for b in range(batch_size):
            shape, color, v = self.shapes[int(si[b])], self.colors[int(ci[b])], int(vi[b])
            vs = self.views[shape]
            sa.append(vs.shade_alpha[v])
            al.append(vs.alpha[v])
            caps.append(self.caption(shape, color, v, bool(bare[b])))
        albedo = (self.albedos[ci] * jitter).clamp(0, 1)  # (B, 3)
        background = None
        if self.random_background_prob > 0:
            random_bg = torch.rand(batch_size, generator=generator) < self.random_background_prob  # (B,)
            colours = torch.rand(batch_size, 3, generator=generator)  # (B, 3)
            background = torch.where(random_bg[:, None], colours, torch.tensor(BACKGROUND))  # (B, 3)
        return colorize(torch.stack(sa), torch.stack(al), albedo, background), caps

    def reference_colors(self) -> dict[str, tuple[float, float, float]]:
        """Mean rendered RGB (in [0, 1]) of each named colour over the object pixels of all views."""
        sa = torch.cat([v.shade_alpha for v in self.views.values()])
        al = torch.cat([v.alpha for v in self.views.values()])
        mean_shade = float(sa.sum() / al.sum().clamp(min=1e-8))
        return {c: tuple(min(1.0, x * mean_shade) for x in PALETTE[c]) for c in self.colors}  # type: ignore[misc]


def hue_deg(rgb: tuple[float, float, float] | Tensor) -> float:
    """HSV hue of an RGB colour in degrees [0, 360) (0 for greys)."""
    r, g, b = (float(c) for c in torch.as_tensor(rgb, dtype=torch.float32))
    mx, mn = max(r, g, b), min(r, g, b)
    if mx - mn < 1e-8:
        return 0.0
    if mx == r:
        h = ((g - b) / (mx - mn)) % 6
    elif mx == g:
        h = (b - r) / (mx - mn) + 2
    else:
        h = (r - g) / (mx - mn) + 4
    return 60.0 * h


def nearest_color(rgb: tuple[float, float, float] | Tensor, references: dict[str, tuple[float, float, float]]) -> str:
    """Name of the reference colour whose hue is nearest to that of ``rgb`` (circular distance in degrees).

    Hue, not raw RGB: the palette is a set of distinct hues, shading changes brightness but not hue, and
    blending with the neutral grey background (semi-transparent edges) changes saturation but not hue.
    """
    h = hue_deg(rgb)
    best, best_d = "", math.inf
    for name, ref in references.items():
        d = abs(h - hue_deg(ref)) % 360.0
        d = min(d, 360.0 - d)
        if d < best_d:
            best, best_d = name, d
    return best
