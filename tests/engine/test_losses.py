"""Emptiness, smoothness and center-depth losses: values, the stage switch, the corrected center-depth sign."""

import math

import pytest
import torch

from sjc_engine.losses import center_box_mask, center_depth_loss, emptiness_loss, emptiness_weight
from sjc_engine.native import native_lib


def test_emptiness_value_and_gradient():
    w = torch.tensor([0.0, 0.1, 0.5, 1.0], requires_grad=True)
    loss = emptiness_loss(w, scale=10.0)
    assert loss.item() == pytest.approx(sum(math.log(1 + 10 * v) for v in (0.0, 0.1, 0.5, 1.0)) / 4)
    loss.backward()
    torch.testing.assert_close(w.grad, 10.0 / (1 + 10 * w.detach()) / 4)
    assert emptiness_loss(torch.zeros(0)).item() == 0.0


def test_emptiness_weight_two_stages():
    assert emptiness_weight(0, 100, 1e4, 20.0, 0.5) == 1e4
    assert emptiness_weight(49, 100, 1e4, 20.0, 0.5) == 1e4
    assert emptiness_weight(50, 100, 1e4, 20.0, 0.5) == 2e5  # reference: emptiness_step * n_steps <= i


def test_center_box():
    m = center_box_mask(64, 64)
    assert m.sum().item() == 50 * 50 and not m[6, 32] and m[7, 32]  # the reference's depth[7:-7, 7:-7]


def _depth_with_centre(inside: float, outside: float, requires_grad=True):
    d = torch.full((32, 32), outside)
    d[center_box_mask(32, 32)] = inside
    return d.requires_grad_(requires_grad)


def test_center_depth_pulls_object_to_centre():
    # object in the centre (near), empty border (far, like the reference's background depth 10)
    d = _depth_with_centre(1.5, 10.0)
    loss = center_depth_loss(d)
    assert loss.item() == pytest.approx(-math.log(8.5), rel=1e-5)
    loss.backward()
    inside = center_box_mask(32, 32)
    assert (d.grad[inside] > 0).all()  # descending makes centre depth smaller (nearer: more stuff there)
    assert (d.grad[~inside] < 0).all()  # and the border deeper (emptier)


def test_center_depth_guarded_log():
    d = _depth_with_centre(10.0, 1.5)  # object off-centre: argument negative, the paper's sign would NaN
    loss = center_depth_loss(d, eps=1e-6)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-math.log(1e-6))
    loss.backward()
    assert torch.isfinite(d.grad).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_smoothness_kernel_equals_the_torch_ops(threads: int) -> None:
    """The C kernel (one slab range per thread) against the differences in torch: value and gradient, with the
    grid's first-axis halves on two threads as on one."""
    from sjc_engine import parallel
    from sjc_engine.losses import smoothness_loss
    from sjc_engine.native import native_lib

    if native_lib() is None:
        pytest.skip("C kernels not built")
    g = torch.randn(2, 9, 9, 9, generator=torch.Generator().manual_seed(0), requires_grad=True)
    want = sum(g.diff(dim=axis).square().mean() for axis in (-3, -2, -1))
    want.backward()
    want_grad, g.grad = g.grad, None
    before = parallel._WORKERS
    parallel.set_workers(threads)
    try:
        got = smoothness_loss(g)
        got.backward()
    finally:
        parallel.set_workers(before)
    torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(g.grad, want_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weighted_smoothness_kernel_equals_the_torch_ops(threads: int, dtype: torch.dtype) -> None:
    """With a weight grid, each difference weighs as the smaller of its two nodes' weights: the C kernel against
    torch ops written out here, value and gradient, no gradient into the weights; weights of one give the plain
    loss, weights of zero nothing."""
    from sjc_engine import parallel
    from sjc_engine.losses import smoothness_loss
    from sjc_engine.native import native_lib

    if native_lib() is None:
        pytest.skip("C kernels not built")
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(3, 9, 9, 9, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.rand(9, 9, 9, generator=gen, dtype=dtype)
    w[:4] = 0.0  # an empty half: its differences do not count
    want = 0
    for axis in (1, 2, 3):
        a = w.narrow(axis - 1, 0, 8)
        b = w.narrow(axis - 1, 1, 8)
        want = want + (g.diff(dim=axis).square() * torch.minimum(a, b)[None]).mean()
    want.backward()
    want_grad, g.grad = g.grad, None
    before = parallel._WORKERS
    parallel.set_workers(threads)
    try:
        got = smoothness_loss(g, weight=w)
        got.backward()
    finally:
        parallel.set_workers(before)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got, want.detach(), **tol)
    torch.testing.assert_close(g.grad, want_grad, **tol)
    assert float(g.grad[:, :3].abs().max()) == 0.0  # nodes whose every neighbour pair has an empty end
    with torch.no_grad():
        torch.testing.assert_close(smoothness_loss(g, weight=torch.ones_like(w)), smoothness_loss(g), **tol)
        assert float(smoothness_loss(g, weight=torch.zeros_like(w))) == 0.0
    with pytest.raises(ValueError, match="weight must be"):
        smoothness_loss(g, weight=w[:8])


def test_center_depth_checks_shape():
    with pytest.raises(ValueError):
        center_depth_loss(torch.zeros(1, 8, 8))


def test_smoothness_loss_values_and_gradient():
    from sjc_engine.losses import smoothness_loss

    flat = torch.full((1, 5, 5, 5), 3.0)
    assert float(smoothness_loss(flat)) == 0.0
    ramp = torch.arange(5.0).view(1, 5, 1, 1).expand(1, 5, 5, 5)  # steps of 1 along the first grid axis only
    assert float(smoothness_loss(ramp)) == pytest.approx(1.0)
    spike = torch.zeros(1, 5, 5, 5, dtype=torch.float64)
    spike[0, 2, 2, 2] = 1.0  # six neighbour pairs differ by 1: 2 per axis, each axis' mean over 4 * 5 * 5 pairs
    assert float(smoothness_loss(spike)) == pytest.approx(3 * 2 / 100)
    g = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(smoothness_loss, (g,))
    spike.requires_grad_(True)
    smoothness_loss(spike).backward()
    assert float(spike.grad[0, 2, 2, 2]) > 0 and float(spike.grad[0, 1, 2, 2]) < 0  # pulls the spike down, neighbours up
    with pytest.raises(ValueError):
        smoothness_loss(torch.zeros(4, 4))


def tiny_run(**overrides):
    """Six SJC steps of a 10^3 field against a Gaussian denoiser: (field, step reports)."""
    from sjc_engine.callbacks import Callbacks
    from sjc_engine.config import SJCConfig
    from sjc_engine.denoisers.gaussian import GaussianDenoiser
    from sjc_engine.optimize import run_sjc

    reports = []

    class Rec(Callbacks):
        def on_step(self, report):
            reports.append(report)

    den = GaussianDenoiser(torch.full((3, 12, 12), 0.5), var=0.01)
    config = SJCConfig(prompt="a red cube", steps=6, grid_size=10, render_size=12, sigma_min=0.05, sigma_max=2.0,
                       preview_every=0, checkpoint_every=0, device="cpu", blob_density=6.0, **overrides)
    return run_sjc(config, den, Rec()).field, reports


def test_smooth_weight_reaches_the_loop_and_is_validated():
    from sjc_engine.config import ConfigError, SJCConfig
    from sjc_engine.losses import smoothness_loss

    with pytest.raises(ConfigError) as err:
        SJCConfig(prompt="x", smooth_weight=-1.0)
    assert err.value.field == "smooth_weight"
    with pytest.raises(ConfigError) as err:
        SJCConfig(prompt="x", emptiness_scale=0.0)  # the renderer makes log(1 + s w) with s > 0
    assert err.value.field == "emptiness_scale"
    rough = tiny_run()[0].density.detach()
    field, reports = tiny_run(smooth_weight=1e3)
    smooth = field.density.detach()
    assert "smoothness" in reports[-1].losses
    assert float(smoothness_loss(smooth)) < float(smoothness_loss(rough))


def test_color_smooth_weight_evens_the_features_and_is_validated():
    from sjc_engine.config import ConfigError, SJCConfig
    from sjc_engine.losses import smoothness_loss

    with pytest.raises(ConfigError) as err:
        SJCConfig(prompt="x", color_smooth_weight=-1.0)
    assert err.value.field == "color_smooth_weight"
    plain = tiny_run()[0]
    even, reports = tiny_run(color_smooth_weight=1e3)
    assert "color_smoothness" in reports[-1].losses and "smoothness" not in reports[-1].losses
    assert float(smoothness_loss(even.features.detach())) < 0.75 * float(smoothness_loss(plain.features.detach()))
    # the density is not the loss's business: it moves only through what the changed colours do to the renders
    assert float(smoothness_loss(even.density.detach())) == pytest.approx(float(smoothness_loss(plain.density.detach())), rel=0.3)


def _torch_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the smoothness loss take its torch ops (as on a GPU or without the C kernels)."""
    from sjc_engine import losses

    monkeypatch.setattr(losses, "native_supports", lambda *tensors: False)


@pytest.mark.skipif(native_lib() is None, reason="the C kernels are not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smoothness_kernel_agrees_with_the_torch_ops(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    from sjc_engine.losses import smoothness_loss

    g = torch.Generator().manual_seed(0)
    grids = [torch.randn(1, 12, 12, 12, generator=g, dtype=dtype), torch.randn(3, 2, 2, 2, generator=g, dtype=dtype)]
    tol = {"rtol": 1e-6, "atol": 1e-9} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-15}

    def run() -> list[torch.Tensor]:
        out = []
        for grid in grids:
            x = grid.clone().requires_grad_(True)
            loss = smoothness_loss(x)
            (2.0 * loss).backward()
            out += [loss.detach(), x.grad]
        return out

    native = run()
    with monkeypatch.context() as m:
        _torch_paths(m)
        ref = run()
    for a, b in zip(native, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, **tol)
    assert float(native[0]) > 0 and float(native[1].abs().max()) > 0


def test_weighted_smoothness_torch_path_matches_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from sjc_engine.losses import smoothness_loss

    if native_lib() is None:
        pytest.skip("C kernels not built")
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(3, 7, 7, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.rand(7, 7, 7, generator=gen, dtype=torch.float64)
    native = smoothness_loss(g, weight=w)
    (native_grad,) = torch.autograd.grad(native, g)
    _torch_paths(monkeypatch)
    ref = smoothness_loss(g, weight=w)
    (ref_grad,) = torch.autograd.grad(ref, g)
    torch.testing.assert_close(native, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(native_grad, ref_grad, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda x: smoothness_loss(x, weight=w), (g,))
