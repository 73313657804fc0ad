"""The background lookup: the C kernels against the torch path (values and texture gradients), at the seam, the
poles and texel centres, NaN directions, and the fallbacks."""

import math

import pytest
import torch

from sjc_engine.background import background_lookup, background_torch
from sjc_engine.native import native_lib

pytestmark = pytest.mark.skipif(native_lib() is None, reason="the C kernels are not built")


def _dirs(n: int, dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(1)
    d = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    special = torch.tensor([
        [0.0, 1.0, 0.0], [0.0, -1.0, 0.0],  # the poles
        [-1e-9, 0.3, 1.0], [1e-9, 0.3, 1.0], [0.0, 0.3, 1.0], [-0.0, 0.3, -1.0],  # either side of the seam
        [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0],  # quarter turns
        [0.0, 1.0000001, 0.0],  # |y| > 1 (clamped)
    ], dtype=torch.float64)
    return torch.cat([special, d]).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("res", [1, 2, 4, 7])
@pytest.mark.parametrize("tanh", [False, True])
def test_kernels_match_the_torch_path(dtype: torch.dtype, tol: float, res: int, tanh: bool) -> None:
    torch.manual_seed(res)
    tex = torch.randn(3, res, res, dtype=dtype, requires_grad=True)
    dirs = _dirs(3000, dtype)
    ours, ref = background_lookup(tex, dirs, tanh), background_torch(tex, dirs, tanh)
    assert ours.shape == ref.shape == (dirs.shape[0], 3)
    assert ours.grad_fn is not None and "Background" in type(ours.grad_fn).__name__  # the kernels ran
    assert torch.allclose(ours, ref, atol=tol, rtol=0)
    g = torch.randn_like(ours)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, tex, g), torch.autograd.grad(ref, tex, g)
    scale = g_ref.abs().max()
    assert torch.allclose(g_ours, g_ref, atol=tol * float(scale) * 10, rtol=0)


def test_texel_centres_and_seam() -> None:
    res = 4
    tex = torch.arange(res * res, dtype=torch.float64).view(1, res, res)  # texel (row, col) = 4 row + col
    # the centre of texel (row 1, col 2): polar (1 + 0.5) / 4 of pi, azimuth (2 + 0.5) / 4 of a turn
    polar, azim = 1.5 / res * math.pi, 2.5 / res * 2 * math.pi
    d = torch.tensor([[math.sin(polar) * math.sin(azim), math.cos(polar), math.sin(polar) * math.cos(azim)]],
                     dtype=torch.float64)
    assert background_lookup(tex, d, False).item() == pytest.approx(6.0, abs=1e-9)
    # on the seam (azimuth 0) halfway between the last column and the first of row 0 (its centre row)
    polar = 0.5 / res * math.pi
    d = torch.tensor([[0.0, math.cos(polar), math.sin(polar)]], dtype=torch.float64)
    assert background_lookup(tex, d, False).item() == pytest.approx((3.0 + 0.0) / 2, abs=1e-9)
    # the poles clamp to the first and last rows; azimuth a quarter turn: halfway between columns 0 and 1
    up = torch.tensor([[1e-12, 1.0, 0.0], [1e-12, -1.0, 0.0]], dtype=torch.float64)
    assert background_lookup(tex, up, False).view(-1).tolist() == pytest.approx([0.5, 12.5], abs=1e-6)


def test_nan_directions_read_nan_and_add_no_gradient() -> None:
    tex = torch.randn(3, 4, 4, requires_grad=True)
    dirs = torch.tensor([[float("nan"), 0.0, 1.0], [0.0, float("nan"), 1.0], [0.0, 0.0, 1.0]])
    out = background_lookup(tex, dirs, False)
    assert out[:2].isnan().all() and out[2].isfinite().all()
    (g,) = torch.autograd.grad(out[2].sum(), tex)
    assert g.isfinite().all() and g.sum().item() == pytest.approx(3.0)  # the one finite ray's weights sum to 1


def test_falls_back_to_torch_where_the_kernels_cannot_take_it() -> None:
    tex = torch.randn(3, 4, 4, dtype=torch.float64)
    dirs = _dirs(50, torch.float64)[10:].requires_grad_()  # not the poles (acos has no derivative there)
    out = background_lookup(tex, dirs, False)  # directions that need a gradient: the torch path
    (g,) = torch.autograd.grad(out.sum(), dirs)
    assert g.shape == dirs.shape and g.abs().sum() > 0
    with pytest.raises(ValueError, match="dirs must be"):
        background_lookup(tex, dirs.detach()[:, :2], False)


def test_a_field_subclass_activation_applies_to_its_background() -> None:
    from sjc_engine.field import VoxelField

    class Halved(VoxelField):
        def activate_features(self, feats: torch.Tensor) -> torch.Tensor:
            return feats * 0.5

    torch.manual_seed(0)
    plain = VoxelField(grid_size=4, channels=3)
    halved = Halved(grid_size=4, channels=3)
    halved.load_state_dict(plain.state_dict())
    dirs = _dirs(40, torch.float32)
    assert torch.allclose(halved.background(dirs), 0.5 * plain.background(dirs))
