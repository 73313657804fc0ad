"""Small image helpers: float RGB tensors to uint8 arrays, PNG files, grids of images."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_uint8_image(rgb: Tensor | np.ndarray) -> np.ndarray:
    """RGB (3, H, W) in [0, 1] (values outside are clipped) to an (H, W, 3) uint8 array."""
    arr = rgb.detach().float().cpu().numpy() if isinstance(rgb, Tensor) else np.asarray(rgb, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W) or (1, H, W), got {arr.shape}")
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    return (np.clip(np.nan_to_num(arr), 0.0, 1.0).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)  # (H, W, 3)


def save_png(array: np.ndarray | Tensor, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 array (or a (3, H, W) float tensor in [0, 1]) as a PNG."""
    if isinstance(array, Tensor):
        array = to_uint8_image(array)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def image_grid(images: Sequence[np.ndarray], cols: int, pad: int = 0) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 arrays row by row into one image; empty cells stay black."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    h, w = images[0].shape[:2]
    if any(im.shape != images[0].shape for im in images):
        raise ValueError("image_grid needs images of one shape")
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    out = np.zeros((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, images[0].shape[2]), dtype=images[0].dtype)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return out


def colorize_depth(depth: Tensor, opacity: Tensor, near: float | None = None, far: float | None = None) -> np.ndarray:
    """A depth map (H, W) as an (H, W, 3) uint8 image: near bright yellow to far dark purple, background black.

    Depth is normalised over the pixels with opacity > 0.5 (or ``near``/``far`` when given), so the colours
    use the whole range for the object. With ``near`` and ``far`` given, a stack of maps (..., H, W) works too
    (every pixel on its own): (..., H, W, 3).
    """
    d = depth.detach().float().cpu()
    fg = opacity.detach().float().cpu() > 0.5
    if near is None or far is None:
        vals = d[fg]
        near = float(vals.min()) if vals.numel() else 0.0
        far = float(vals.max()) if vals.numel() else 1.0
    x = ((d - near) / max(far - near, 1e-6)).clamp(0, 1)
    x = 1.0 - x  # near = 1
    # a compact perceptual ramp (dark purple -> orange -> yellow), like magma/plasma
    stops = torch.tensor([[0.05, 0.03, 0.25], [0.45, 0.05, 0.55], [0.85, 0.25, 0.35], [0.98, 0.6, 0.15], [0.99, 0.95, 0.4]])
    pos = x * (len(stops) - 1)
    i0 = pos.floor().clamp(max=len(stops) - 2).long()
    f = (pos - i0)[..., None]
    rgb = stops[i0] * (1 - f) + stops[i0 + 1] * f  # (H, W, 3)
    rgb = rgb * fg[..., None]
    return (rgb.numpy() * 255 + 0.5).astype(np.uint8)
