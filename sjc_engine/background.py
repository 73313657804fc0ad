"""The field's background: a texture looked up by ray direction (:meth:`sjc_engine.field.VoxelField.background`).

The texture (C, res, res) is indexed by (polar angle from +y, azimuth around y): bilinear between texel
centres, wrapping around in azimuth and clamped at the poles. :func:`background_lookup` runs the C kernels of
``native/background.c`` on the CPU (one pass over the rays, forward and backward: the torch path's angles, padded
texture copy and ``grid_sample`` cost about 0.6 ms of a 64^3 step of 1024 rays) and :func:`background_torch`
elsewhere, or where the directions need a gradient; the two agree to float rounding
(``tests/engine/test_background.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sjc_engine.native import kernel, native_supports

__all__ = ["background_lookup", "background_torch"]


def background_torch(texture: Tensor, dirs: Tensor, tanh: bool) -> Tensor:
    """Background features (R, C) of unit directions ``dirs`` (R, 3) in ``texture`` (C, res, res), through tanh
    where ``tanh`` (torch ops: any device, differentiable in both)."""
    C, res = texture.shape[0], texture.shape[-1]
    x, y, z = dirs.unbind(-1)
    polar = torch.acos(y.clamp(-1.0, 1.0)) / math.pi  # (R,) in [0, 1]
    azim = (torch.atan2(x, z) / (2 * math.pi)) % 1.0  # (R,) in [0, 1)
    tex = torch.cat([texture[:, :, -1:], texture, texture[:, :, :1]], dim=2)  # (C, res, res + 2) wrap
    col = azim * res + 0.5  # texel centres of the padded texture at 1, ..., res
    row = (polar * res - 0.5).clamp(0, res - 1)
    gx = col / (res + 1) * 2 - 1
    gy = row / max(res - 1, 1) * 2 - 1 if res > 1 else torch.zeros_like(row)
    grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)  # (1, 1, R, 2)
    out = F.grid_sample(tex[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = out.view(C, -1).T  # (1, C, 1, R) -> (R, C)
    return torch.tanh(out) if tanh else out


class _Background(torch.autograd.Function):
    """``bg_fwd``/``bg_bwd`` as one autograd node: the texture (C, res, res) in, (R, C) out; the directions take
    no gradient."""

    @staticmethod
    def forward(ctx: Any, texture: Tensor, dirs: Tensor, tanh: bool) -> Tensor:
        C, res = texture.shape[0], texture.shape[-1]
        tex, d = texture.detach().contiguous(), dirs.detach().contiguous()
        out = tex.new_empty(d.shape[0], C)
        kernel("bg_fwd", tex.dtype)(d.data_ptr(), d.shape[0], tex.data_ptr(), C, res, int(tanh), out.data_ptr())
        ctx.save_for_backward(d, out)
        ctx.tanh, ctx.shape = tanh, texture.shape
        return out

    @staticmethod
    def backward(ctx: Any, g_out: Tensor) -> Any:
        d, out = ctx.saved_tensors
        C, res = ctx.shape[0], ctx.shape[-1]
        g_out = g_out.contiguous()
        g_tex = g_out.new_zeros(ctx.shape)
        kernel("bg_bwd", g_out.dtype)(d.data_ptr(), d.shape[0], C, res, int(ctx.tanh), out.data_ptr(),
                                      g_out.data_ptr(), g_tex.data_ptr())
        return g_tex, None, None


def background_lookup(texture: Tensor, dirs: Tensor, tanh: bool) -> Tensor:
    """Background features (R, C) of unit directions ``dirs`` (R, 3) in ``texture`` (C, res, res), through tanh
    where ``tanh``: the C kernels where they take the tensors and ``dirs`` needs no gradient, else
    :func:`background_torch`."""
    if dirs.dim() != 2 or dirs.shape[-1] != 3:
        raise ValueError(f"dirs must be (R, 3), got {tuple(dirs.shape)}")
    if dirs.requires_grad or not native_supports(texture, dirs):
        return background_torch(texture, dirs, tanh)
    return _Background.apply(texture, dirs, tanh)
