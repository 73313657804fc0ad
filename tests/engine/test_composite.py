"""Volume compositing: the C kernels against the torch path, and finite differences."""

import pytest
import torch

from sjc_engine.composite import composite, composite_torch
from sjc_engine.native import native_lib


@pytest.mark.parametrize("threads", [1, 2])
def test_native_compositing_matches_torch(threads: int) -> None:
    """The C compositing kernels give the torch ops' weights, colours, opacity, depth and gradients."""
    if native_lib() is None:
        pytest.skip("native kernels not built (SJC_NATIVE=0 or no C compiler)")
    g = torch.Generator().manual_seed(0)
    n, k, C = 90, 100, 3  # n * k >= 8192: the two-thread split kicks in
    counts = torch.randint(0, k + 1, (n,), generator=g)
    inside = torch.arange(k)[None, :] < counts[:, None]
    tau = torch.rand(n, k, generator=g, dtype=torch.float64) * 0.3 * inside
    tau[: n // 4] *= 1e-3  # faint rays: many samples under the weight threshold
    feats = torch.randn(C, n, k, generator=g, dtype=torch.float64)
    t0 = torch.rand(n, generator=g, dtype=torch.float64)
    ups = [torch.randn(s, generator=g, dtype=torch.float64) for s in ((n, k), (n, C), (n,), (n,))]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for fn in (composite, composite_torch):
            x, f = tau.clone().requires_grad_(True), feats.clone().requires_grad_(True)
            outs = fn(x, f, t0, 0.01, counts, 1e-4)
            torch.autograd.backward(outs, ups)
            results.append(([o.detach() for o in outs], x.grad, f.grad))
    finally:
        torch.set_num_threads(old)
    (o1, gx1, gf1), (o2, gx2, gf2) = results
    for a, b in zip(o1, o2):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.allclose(gx1, gx2, atol=1e-10) and torch.allclose(gf1, gf2, atol=1e-12)
    assert (gf1 == 0).sum() > (~inside).sum() * C  # features under the threshold got no gradient
    # and the native gradients against finite differences, float64, a few rays
    small = (tau[:4, :12].clone().requires_grad_(True), feats[:, :4, :12].clone().requires_grad_(True))
    cnt = counts[:4].clamp(max=12)
    assert torch.autograd.gradcheck(lambda a, b: composite(a, b, t0[:4], 0.01, cnt, 1e-4), small)
