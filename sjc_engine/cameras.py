"""Pinhole cameras looking at the origin: random training poses, turntable paths, view prompts.

Convention (OpenGL, as the reference): a camera looks along its local -z with +y up; world +y is up.
Azimuth 0 puts the camera on the +z axis ("front"), azimuth grows towards +x; elevation is the angle
above the xz-plane. Training poses follow pals-ttic/sjc ``pose.py``: radius 1.5, azimuth uniform in
[0, 360), elevation area-uniform (uniform in sin(elevation)), field of view uniform in a range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Camera:
    """One pinhole camera.

    Attributes:
        c2w: (4, 4) camera-to-world matrix (columns: right, up, backward, position).
        fov_deg: vertical field of view in degrees.
        height, width: image size in pixels.
        azimuth_deg, elevation_deg, radius: the spherical pose it was made from.
    """

    c2w: Tensor
    fov_deg: float
    height: int
    width: int
    azimuth_deg: float = 0.0
    elevation_deg: float = 0.0
    radius: float = 1.5

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return 0.5 * self.height / math.tan(math.radians(self.fov_deg) / 2)

    def rays(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Ray origins and unit directions through pixel centres, each (H, W, 3), row 0 at the top."""
        origins, dirs = camera_rays([self], device, dtype)
        return origins[0], dirs[0]


def camera_rays(
    cameras: list[Camera], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """:meth:`Camera.rays` of cameras of one image size at once: origins and directions (V, H, W, 3) each (the
    same values as one camera at a time, in a fixed number of operations: the loop's four views a step took 0.7 ms
    one by one)."""
    H, W = cameras[0].height, cameras[0].width
    if any((c.height, c.width) != (H, W) for c in cameras):
        raise ValueError(f"cameras of one size only, got {sorted({(c.height, c.width) for c in cameras})}")
    V = len(cameras)
    f = torch.tensor([c.focal for c in cameras], device=device, dtype=dtype).view(V, 1, 1)  # (V, 1, 1)
    j = torch.arange(W, device=device, dtype=dtype) + 0.5
    i = torch.arange(H, device=device, dtype=dtype) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")  # (H, W)
    dirs_cam = torch.stack([(jj - W / 2) / f, -(ii - H / 2) / f, (-torch.ones_like(ii)).expand(V, H, W)], dim=-1)
    c2w = torch.stack([c.c2w for c in cameras]).to(device=device, dtype=dtype)  # (V, 4, 4)
    dirs = (dirs_cam.reshape(V, H * W, 3) @ c2w[:, :3, :3].transpose(1, 2)).reshape(V, H, W, 3)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, None, :3, 3].expand_as(dirs)  # (V, H, W, 3)
    return origins, dirs


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of two 3-vectors, the same products and differences (a fifth of its time at this size)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up: np.ndarray | None = None) -> Tensor:
    """A (4, 4) camera-to-world matrix at ``eye`` looking at ``target`` (default origin), +y up."""
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    up = np.array([0.0, 1.0, 0.0]) if up is None else np.asarray(up, dtype=np.float64)
    eye = np.asarray(eye, dtype=np.float64)
    back = eye - target
    back /= np.linalg.norm(back)
    right = _cross(up, back)
    if np.linalg.norm(right) < 1e-8:  # looking straight down or up: any right vector will do
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    true_up = _cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, back, eye
    return torch.from_numpy(m).float()


def spherical_camera(
    azimuth_deg: float, elevation_deg: float, radius: float, fov_deg: float, size: int | tuple[int, int]
) -> Camera:
    """A camera on a sphere of ``radius`` around the origin, looking at it."""
    h, w = (size, size) if isinstance(size, int) else size
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = radius * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    return Camera(look_at(eye), fov_deg, h, w, azimuth_deg % 360.0, elevation_deg, radius)


def sample_camera(
    rng: np.random.Generator,
    size: int,
    radius: float = 1.5,
    elev_range_deg: tuple[float, float] = (-6.0, 90.0),
    fov_range_deg: tuple[float, float] = (40.0, 70.0),
) -> Camera:
    """A random training camera: azimuth uniform, elevation area-uniform, fov uniform."""
    az = rng.uniform(0.0, 360.0)
    lo, hi = (math.sin(math.radians(e)) for e in elev_range_deg)
    el = math.degrees(math.asin(float(np.clip(rng.uniform(lo, hi), -1.0, 1.0))))
    fov = rng.uniform(*fov_range_deg)
    return spherical_camera(az, el, radius, fov, size)


def turntable(
    n_frames: int, size: int, radius: float = 1.5, elevation_deg: float = 20.0, fov_deg: float = 60.0
) -> list[Camera]:
    """``n_frames`` cameras evenly spaced in azimuth at a fixed elevation, starting at the front."""
    return [spherical_camera(360.0 * k / n_frames, elevation_deg, radius, fov_deg, size) for k in range(n_frames)]


OVERHEAD_ELEVATION_DEG = 60.0


def view_prefix(azimuth_deg: float, elevation_deg: float) -> str:
    """The reference's view-dependent prompt prefix for a pose.

    "overhead view of" above 60 degrees of elevation, else by 90-degree azimuth quadrant centred on
    the front (azimuth 0): "front view of", "side view of", "backside view of", "side view of".
    """
    if elevation_deg > OVERHEAD_ELEVATION_DEG:
        return "overhead view of"
    quadrant = int(((azimuth_deg + 45.0) % 360.0) // 90.0)
    return ("front view of", "side view of", "backside view of", "side view of")[quadrant]


def view_prompt(prompt: str, camera: Camera) -> str:
    """``prompt`` with the view prefix of ``camera``, e.g. "front view of a red cube"."""
    return f"{view_prefix(camera.azimuth_deg, camera.elevation_deg)} {prompt}"
