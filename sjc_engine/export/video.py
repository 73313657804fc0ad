"""Turntable videos: RGB renderings beside colourised depth, written as H.264 MP4."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from sjc_engine.cameras import turntable
from sjc_engine.export.colors import pixel_decode
from sjc_engine.export.images import colorize_depth, to_uint8_image
from sjc_engine.field import VoxelField
from sjc_engine.renderer import render_image

Decode = Callable[[Tensor], Tensor]


@torch.no_grad()
def render_turntable(
    field: VoxelField,
    decode: Decode | None = None,
    n_frames: int = 60,
    size: int = 64,
    radius: float = 1.5,
    fov_deg: float = 60.0,
    elevation_deg: float = 20.0,
    step_ratio: float = 0.5,
    batch: int = 8,
    out_height: int | None = None,
) -> np.ndarray:
    """Render a full turn around the field.

    Args:
        field: the voxel field.
        decode: rendered features (B, C, H, W) to RGB (B, 3, H', W') in [0, 1]; ``None`` treats the features
            as pixels in [-1, 1].
        n_frames: frames of the turn (azimuth 0, 360/n, ...).
        size: render size in pixels (the decoded frame may be larger, e.g. x8 for SD latents).
        radius, fov_deg, elevation_deg: the camera path.
        step_ratio: ray-march step.
        batch: frames decoded at a time.
        out_height: frames smaller than this are scaled up (bicubic) to it (default ``None``: as decoded).

    Returns:
        (T, H', 2 W', 3) uint8 frames: RGB on the left, depth on the right (resized to the RGB's size).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    decode = decode or pixel_decode
    cams = turntable(n_frames, size, radius=radius, elevation_deg=elevation_deg, fov_deg=fov_deg)
    frames: list[np.ndarray] = []
    for s in range(0, n_frames, batch):
        outs = [render_image(field, cam, step_ratio) for cam in cams[s : s + batch]]
        rgb = decode(torch.stack([o.image for o in outs]))  # (B, 3, H', W')
        H, W = rgb.shape[-2:]
        for o, im in zip(outs, rgb):
            depth = colorize_depth(o.depth, o.opacity, near=radius - field.bbox * 3**0.5, far=radius + field.bbox * 3**0.5)
            depth_t = torch.from_numpy(depth).permute(2, 0, 1)[None].float()  # (1, 3, h, w)
            depth_t = torch.nn.functional.interpolate(depth_t, size=(H, W), mode="nearest")[0]
            left = to_uint8_image(im)
            right = depth_t.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
            frames.append(upscale(np.concatenate([left, right], axis=1), out_height))
    return np.stack(frames)


def upscale(image: np.ndarray, height: int | None) -> np.ndarray:
    """An (H, W, 3) uint8 image scaled up (bicubic, aspect kept) to ``height`` when it is lower; else as it is."""
    if height is None or image.shape[0] >= height:
        return image
    from PIL import Image

    width = round(image.shape[1] * height / image.shape[0])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 30, crf: int = 18) -> Path:
    """Write (T, H, W, 3) uint8 frames as H.264 (libx264), yuv420p, ``+faststart`` MP4 with PyAV.

    Odd sizes are padded by one pixel (yuv420p needs even sides).
    """
    import av  # PyAV: imported here so that the engine imports without it

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    T, H, W, _ = frames.shape
    if T == 0:
        raise ValueError("write_mp4 needs at least one frame")
    if H % 2 or W % 2:
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
        H, W = frames.shape[1:3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
