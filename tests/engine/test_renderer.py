"""Renderer: gradients against finite differences, an opaque slab, the reference's dense semantics, views in one batch."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sjc_engine.cameras import sample_camera, spherical_camera
from sjc_engine.field import VoxelField
from sjc_engine.losses import emptiness_loss
from sjc_engine import renderer
from sjc_engine.native import native_lib
from sjc_engine.renderer import clip_rays, render_image, render_images, render_rays
from tests.fixtures.render import param_inputs, render_with


def _rays(n: int, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 1.2
    origins = torch.randn(n, 3, generator=g, dtype=dtype)
    origins = 1.6 * origins / origins.norm(dim=-1, keepdim=True)
    dirs = target - origins
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def test_gradients_match_finite_differences() -> None:
    torch.manual_seed(0)
    field = VoxelField(grid_size=5, channels=2, bg_res=2).double()
    with torch.no_grad():
        field.density.normal_(0.0, 1.0)
    origins, dirs = _rays(6)

    render = render_with(field, origins, dirs)
    inputs = param_inputs(field)
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    out = render(*inputs)
    assert out[3].numel() > 0 and out[0].shape == (6, 2)


def test_matches_grid_sample_reference() -> None:
    """Same values as the reference's dense algorithm written with F.grid_sample (align_corners=True)."""
    torch.manual_seed(1)
    field = VoxelField(grid_size=12, channels=3)
    with torch.no_grad():
        field.density.normal_(0.0, 2.0)
    origins, dirs = _rays(50, seed=1, dtype=torch.float32)
    out = render_rays(field, origins, dirs, step_ratio=0.5, bg_depth=10.0)

    step = 0.5 * field.voxel_size
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-1 - origins) / safe, (1 - origins) / safe
    tmin = torch.minimum(t0, t1).amax(-1).clamp(min=0)
    tmax = torch.maximum(t0, t1).amin(-1)
    k = int(((tmax - tmin).max() / step).ceil())
    t = tmin[:, None] + step * torch.arange(k)[None]  # (R, k)
    valid = t - tmin[:, None] < (tmax - tmin)[:, None]
    pts = (origins[:, None] + t[..., None] * dirs[:, None]).clamp(-1, 1)  # (R, k, 3)
    grid = pts[..., [2, 1, 0]].reshape(1, -1, 1, 1, 3)  # grid_sample wants (z, y, x) order for [x, y, z] grids
    raw = F.grid_sample(field.density[None], grid, align_corners=True).view(50, k)
    feats = F.grid_sample(field.features[None], grid, align_corners=True).view(3, 50, k).permute(1, 2, 0)
    sigma = field.activate(raw) * valid
    alpha = 1 - torch.exp(-sigma * step)
    trans = torch.cat([torch.ones(50, 1), torch.cumprod(1 - alpha, 1)[:, :-1]], 1)
    w = alpha * trans
    w_feat = w * (w >= 1e-4)
    op = w.sum(1)
    ref = (w_feat[..., None] * feats).sum(1) + (1 - op)[:, None] * field.background(dirs)
    with torch.no_grad():
        assert torch.allclose(out.features, ref, atol=1e-4)
        assert torch.allclose(out.opacity, op, atol=1e-5)
        assert torch.allclose(out.depth, (w * t).sum(1) + (1 - op) * 10.0, atol=1e-3)
        # emptiness-loss layout: rays hitting the box x longest ray, zero-padded, same values
        assert out.weights.numel() == 50 * k
        assert torch.allclose(out.weights.sort().values, w.flatten().sort().values, atol=1e-6)


def test_opaque_slab_weight_at_its_depth() -> None:
    """A slab x in [0.2, 0.4] of huge density stops rays along -x at distance 1.6 - 0.4 = 1.2."""
    field = VoxelField(grid_size=51, channels=3)
    with torch.no_grad():
        xs = torch.linspace(-1, 1, 51)
        inside = ((xs >= 0.2 - 1e-6) & (xs <= 0.4 + 1e-6)).float()
        field.density.copy_((inside * 200.0 - 50.0)[None, :, None, None].expand(1, 51, 51, 51))
        field.features.zero_()
        field.features[0] = 1.0  # the slab is "red"
    ys = torch.linspace(-0.5, 0.5, 7)
    origins = torch.stack([torch.full_like(ys, 1.6), ys, torch.zeros_like(ys)], -1)  # (7, 3)
    dirs = torch.tensor([[-1.0, 0.0, 0.0]]).expand(7, 3)
    out = render_rays(field, origins, dirs, step_ratio=0.5, bg_depth=10.0)
    assert torch.allclose(out.opacity, torch.ones(7), atol=1e-4)
    voxel = field.voxel_size
    assert torch.all((out.depth - 1.2).abs() < voxel), out.depth
    assert torch.allclose(out.features[:, 0], torch.ones(7), atol=1e-3)
    assert torch.allclose(out.features[:, 1:], torch.zeros(7, 2), atol=1e-3)
    # a ray that misses the box sees only the background at the background depth
    miss = render_rays(field, torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert miss.opacity.item() == 0.0 and miss.depth.item() == pytest.approx(10.0)
    assert torch.allclose(miss.features, field.background(torch.tensor([[1.0, 0.0, 0.0]])))


def test_empty_field_is_translucent_as_the_reference() -> None:
    """density zeros -> softplus(-1) = 0.3133 everywhere: opacity 1 - exp(-0.3133 * chord)."""
    field = VoxelField(grid_size=20, channels=4)
    out = render_rays(field, torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]]), step_ratio=0.5)
    chord = 2.0
    expected = 1 - math.exp(-math.log1p(math.exp(-1.0)) * chord)
    assert out.opacity.item() == pytest.approx(expected, rel=1e-3)
    assert out.n_samples == out.n_shaded == 40


def test_render_image_shapes_and_skipping() -> None:
    field = VoxelField(grid_size=16, channels=3)
    with torch.no_grad():
        field.density.fill_(-30.0)  # empty: density ~ softplus(-31), weights far below 1e-4
        field.density[0, 6:10, 6:10, 6:10] = 50.0
    cam = spherical_camera(30.0, 20.0, 1.5, 60.0, (12, 10))
    out = render_image(field, cam)
    assert out.image.shape == (3, 12, 10)
    assert out.depth.shape == out.opacity.shape == (12, 10)
    assert 0 < out.n_shaded < out.n_samples / 4  # features composited only where weights matter
    assert out.opacity.max() > 0.99 and out.opacity.min() < 1e-3
    out.image.sum().backward()
    assert field.features.grad.abs().sum() > 0 and field.density.grad.abs().sum() > 0
    # nodes whose every cell is empty only ever meet samples with w < 1e-4: no feature gradient, but density
    # gradient (they still thin the light out)
    assert field.features.grad[:, :5].abs().max() == 0 and field.features.grad[:, 11:].abs().max() == 0
    assert field.density.grad[:, :5].abs().sum() > 0


@pytest.mark.parametrize("skipping", [False, True])
def test_render_images_equals_one_render_per_view(skipping: bool) -> None:
    """Views in one batch of rays give each view's own image, depth, opacity and dense weights (bit for bit), and the
    same gradients to rounding; a view that misses the box gets the background and no weights."""
    torch.manual_seed(0)
    field = VoxelField(grid_size=20, channels=3, density_shift=-5.0, feature_activation="tanh").double()
    with torch.no_grad():
        r = field.grid_points().norm(dim=-1)  # (N, N, N)
        field.density[0] = 8.0 * (1 - r / 0.6).clamp(min=0) + torch.randn_like(r)
        field.features.normal_()
    if skipping:
        field.refresh_occupancy(field.voxel_size)
    cams = [spherical_camera(30.0, 20.0, 1.8, 50.0, 12), spherical_camera(200.0, 70.0, 1.8, 60.0, (10, 14)),
            spherical_camera(0.0, 0.0, 1.8, 45.0, 12)]
    away = spherical_camera(0.0, 0.0, 1.8, 10.0, 6)
    away.c2w[:3, 2] *= -1  # looks away from the box: every ray misses
    cams.append(away)

    def loss(outs):
        terms = []
        for o in outs:
            ramp = torch.linspace(-1, 1, o.image.numel(), dtype=o.image.dtype).view_as(o.image)
            terms += [(o.image * ramp).sum(), 100 * emptiness_loss(o.weights), 0.1 * o.depth.sum()]
        return torch.stack(terms).sum()

    each = [render_image(field, c, 1.0) for c in cams]
    field.zero_grad()
    loss(each).backward()
    grads_each = [p.grad.clone() for p in field.parameters()]
    batch = render_images(field, cams, 1.0)
    field.zero_grad()
    loss(batch).backward()
    assert len(batch) == len(cams)
    for a, b in zip(each, batch):
        for name in ("image", "depth", "opacity", "weights"):
            assert getattr(a, name).shape == getattr(b, name).shape, name
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert batch[-1].weights.numel() == 0 and float(batch[-1].opacity.detach().abs().max()) == 0
    assert float(emptiness_loss(batch[0].weights).detach()) > 0
    for g, p in zip(grads_each, field.parameters()):
        assert float(g.abs().max()) > 0
        assert torch.allclose(g, p.grad, rtol=1e-10, atol=1e-12)


def test_camera_rays_of_several_cameras_are_each_cameras_own() -> None:
    """camera_rays (the views of a step at once) gives, bit for bit, what one camera's arithmetic gives (the pixel
    grid over the focal length, the rotation, the normalisation), as Camera.rays computed it one at a time."""
    from sjc_engine.cameras import camera_rays, look_at

    rng = np.random.default_rng(3)
    cams = [sample_camera(rng, 12, 1.8, (-10.0, 80.0), (45.0, 60.0)) for _ in range(5)]
    for dtype in (torch.float32, torch.float64):
        origins, dirs = camera_rays(cams, dtype=dtype)
        assert origins.shape == dirs.shape == (5, 12, 12, 3)
        for v, cam in enumerate(cams):  # what Camera.rays computed before it went through camera_rays
            H = W = 12
            i = torch.arange(H, dtype=dtype) + 0.5
            ii, jj = torch.meshgrid(i, i, indexing="ij")
            d = torch.stack([(jj - W / 2) / cam.focal, -(ii - H / 2) / cam.focal, -torch.ones_like(ii)], -1)
            d = d @ cam.c2w.to(dtype)[:3, :3].T
            assert torch.equal(dirs[v], d / d.norm(dim=-1, keepdim=True))
            assert torch.equal(origins[v], cam.c2w.to(dtype)[:3, 3].expand(H, W, 3))
    with pytest.raises(ValueError, match="one size"):
        camera_rays([cams[0], sample_camera(rng, 8)])
    eye = np.array([0.3, -1.1, 0.7])  # look_at's cross products: numpy's, bit for bit
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    want = np.concatenate([right, np.cross(back, right), back])
    got = look_at(eye)[:3, :3].T.reshape(-1).double().numpy()
    assert np.array_equal(got, want.astype(np.float32).astype(np.float64))


def test_render_images_over_given_backgrounds() -> None:
    """Flat per-view backgrounds replace the texture where the field is see-through, and take its gradient."""
    torch.manual_seed(0)
    field = VoxelField(grid_size=16, channels=3, density_shift=-5.0, feature_activation="tanh").double()
    with torch.no_grad():
        r = field.grid_points().norm(dim=-1)  # (N, N, N)
        field.density[0] = 40.0 * (1 - r / 0.5).clamp(min=0)
    cams = [spherical_camera(30.0, 20.0, 1.8, 50.0, 10), spherical_camera(200.0, 60.0, 1.8, 60.0, (8, 12))]
    colours = torch.tensor([[0.9, -0.8, 0.1], [-0.5, 0.4, -1.0]], dtype=torch.float64, requires_grad=True)  # (V, C)
    plain = render_images(field, cams, 1.0)
    over = render_images(field, cams, 1.0, backgrounds=colours)
    for cam, a, b, c in zip(cams, plain, over, colours):
        _, dirs = cam.rays(dtype=torch.float64)
        tex = field.background(dirs.reshape(-1, 3)).T.reshape(3, cam.height, cam.width)  # (C, H, W)
        see_through = (1 - a.opacity.detach())[None]  # (1, H, W)
        assert float(see_through.min()) < 0.05 and float(see_through.max()) > 0.95  # an object and open sky
        expected = a.image + see_through * (c[:, None, None] - tex)
        assert torch.allclose(b.image, expected, atol=1e-12)
        assert torch.equal(a.weights, b.weights) and torch.equal(a.depth, b.depth)
    field.zero_grad()
    torch.stack([o.image.sum() for o in over]).sum().backward()
    assert field.bg.grad is None or float(field.bg.grad.abs().max()) == 0  # the texture is not in these images
    for v, o in enumerate(over):
        assert torch.allclose(colours.grad[v], (1 - o.opacity.detach()).sum().expand(3))
    with pytest.raises(ValueError, match="backgrounds must be"):
        render_images(field, cams, 1.0, backgrounds=colours[:1])


@pytest.mark.skipif(native_lib() is None, reason="the C kernels are not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_rays_kernel_gives_the_torch_ops_bits(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ray_setup`` keeps the same rays with the same counts, first samples and steps, to the bit, as the torch
    ops (a field renders the same on the CPU kernels and the torch path, on the CPU or a GPU)."""
    g = torch.Generator().manual_seed(3)
    origins, dirs = _rays(400, seed=3, dtype=dtype)  # from 1.6 away towards the middle of the box
    dirs[300:] = torch.randn(100, 3, generator=g, dtype=dtype)  # and anywhere
    dirs[300:] /= dirs[300:].norm(dim=-1, keepdim=True)
    dirs[:20, 1] = 0.0  # parallel to a face
    origins[20:30] = 0.3 * torch.rand(10, 3, generator=g, dtype=dtype)  # inside the box
    origins[30, 1], dirs[31, 2] = float("nan"), float("nan")
    origins[32:40] = torch.tensor([1.0, 0.2, -3.0], dtype=dtype)  # on the plane of a face
    dirs[40:45] *= 1e-10  # below the 1e-9 floor
    for bbox, n, step in ((1.0, 64, 1 / 64), (0.5, 7, 0.3), (1.3, 100, 0.0041)):
        native = clip_rays(origins, dirs, bbox, step, n)
        with monkeypatch.context() as m:
            m.setattr(renderer, "native_supports", lambda *tensors: False)
            ref = clip_rays(origins, dirs, bbox, step, n)
        assert 50 < native[0].numel() < 400  # some rays miss the box, most hit it
        for a, b in zip(native, ref):
            assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("shift", [-14.0, -3.0])  # tiny weights (~1e-6: log1p's rounding matters), large ones
def test_emptiness_from_the_renderer_is_the_loss_of_its_weights(fused: bool, shift: float,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``emptiness_scale``: each view's ``emptiness`` (the fused kernels' per-ray sums of the weighted samples) is
    ``emptiness_loss`` of its weights, in value and in the gradients it gives the field."""
    if not fused:
        monkeypatch.setattr(renderer, "fused_supported", lambda *args: False)
    torch.manual_seed(0)
    field = VoxelField(grid_size=20, channels=3, density_shift=shift, feature_activation="tanh")
    with torch.no_grad():
        r = field.grid_points().norm(dim=-1)  # (N, N, N)
        field.density[0] = 8.0 * (1 - r / 0.6).clamp(min=0) + torch.randn_like(r)
    field.refresh_occupancy(field.voxel_size)
    cams = [spherical_camera(30.0, 20.0, 1.8, 50.0, 12), spherical_camera(200.0, 70.0, 1.8, 60.0, (10, 14))]
    results = []
    for made in (True, False):
        field.zero_grad()
        outs = render_images(field, cams, 1.0, emptiness_scale=10.0 if made else None)
        if made:
            losses = torch.stack([o.emptiness for o in outs])
        else:
            losses = torch.stack([emptiness_loss(o.weights.double(), 10.0).float() for o in outs])
        (losses * torch.tensor([1.0, 3.0])).sum().backward()
        results.append((losses.detach(), field.density.grad.clone(), field.d_scale.grad.clone()))
    (made, g_made, ds_made), (ref, g_ref, ds_ref) = results
    assert float(ref.min()) > 0
    torch.testing.assert_close(made, ref, rtol=2e-6, atol=0)
    torch.testing.assert_close(g_made, g_ref, rtol=1e-5, atol=1e-6 * float(g_ref.abs().max()))
    torch.testing.assert_close(ds_made, ds_ref, rtol=1e-4, atol=0)
    assert render_images(field, cams, 1.0)[0].emptiness is None
    lean = render_images(field, cams, 1.0, emptiness_scale=10.0, view_weights=False)
    assert all(o.weights.numel() == 0 for o in lean)
    assert torch.equal(torch.stack([o.emptiness.detach() for o in lean]), made)
    with pytest.raises(ValueError, match="emptiness_scale"):
        render_images(field, cams, 1.0, emptiness_scale=0.0)
