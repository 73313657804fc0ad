"""The half-precision path on the CPU: bf16 and fp16 SD denoisers give float32 results on the caller's device.

On a GPU the SD path runs in fp16; these tests run the same code in bf16/fp16 on the CPU (torch supports the
UNet's, VAE's and CLIP's ops there) so that dtype mistakes (a float32 input into a half UNet, a half sigma
table, guidance combined in half precision) fail in CI.
"""

import numpy as np
import pytest
import torch

from sjc_engine.config import SJCConfig
from sjc_engine.denoisers.loader import load_denoiser, load_from_path
from sjc_engine.optimize import run_sjc

HALF = [torch.bfloat16, torch.float16]
# relative rounding of one half-precision value: bf16 keeps 8 significant bits, fp16 11
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


@pytest.fixture(scope="module")
def sd32(tiny_sd_dir):
    return load_from_path(tiny_sd_dir)


@pytest.mark.parametrize("dtype", HALF)
def test_half_denoiser_matches_float32(tiny_sd_dir, sd32, dtype):
    den = load_denoiser(str(tiny_sd_dir), device="cpu", dtype=dtype)
    assert den.dtype == dtype
    assert {den.unet.dtype, den.vae.dtype, den.text_encoder.dtype} == {dtype}
    assert den.sigmas.dtype == torch.float64 and den.alphas_cumprod.dtype == torch.float64
    cond = den.encode_prompt("a red cube")
    assert cond.cond.dtype == dtype
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    for sigma in (0.1, 1.0, 10.0):
        for scale in (1.0, 7.5):
            d = den.denoise(x, sigma, cond, guidance_scale=scale)
            ref = sd32.denoise(x, sigma, sd32.encode_prompt("a red cube"), guidance_scale=scale)
            assert d.dtype == torch.float32 and d.device.type == "cpu" and torch.isfinite(d).all()
            # D = x - sigma * eps: compare the implied eps; measured 3-5 roundings at scale 1, ~17 at 7.5
            eps_ref = (x - ref) / sigma
            rel = ((d - ref).norm() / (sigma * eps_ref.norm())).item()
            assert rel <= 8 * UNIT_ROUNDOFF[dtype] * scale, (sigma, scale, rel)


@pytest.mark.parametrize("dtype", HALF)
def test_guidance_is_combined_in_float32(tiny_sd_dir, dtype):
    den = load_from_path(tiny_sd_dir, dtype=dtype)
    cond = den.encode_prompt("a red cube")
    x_in = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    out = den.model_output(x_in, 500, cond, guidance_scale=100.0)
    assert out.dtype == torch.float32
    with torch.no_grad():
        both = den.unet(torch.cat([x_in, x_in]), torch.tensor([500, 500]),
                        encoder_hidden_states=torch.cat([cond.uncond, cond.cond])).sample.float()
    u, c = both.chunk(2)
    torch.testing.assert_close(out, u + 100.0 * (c - u), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", HALF)
def test_decode_in_half_precision(tiny_sd_dir, sd32, dtype):
    den = load_from_path(tiny_sd_dir, dtype=dtype)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    rgb = den.decode(z)
    assert rgb.dtype == torch.float32 and rgb.shape == (1, 3, 32, 32)
    assert (rgb - sd32.decode(z)).abs().max() < 100 * UNIT_ROUNDOFF[dtype]


@pytest.mark.parametrize("dtype", HALF)
def test_sjc_steps_with_a_half_denoiser(tiny_sd_dir, dtype):
    den = load_from_path(tiny_sd_dir, dtype=dtype)
    previews = []

    class Keep:
        def on_step(self, report):
            if report.preview is not None:
                previews.append(report.preview)

        def should_stop(self):
            return False

        def on_checkpoint(self, state, step):
            pass

    config = SJCConfig(prompt="a red cube", model=str(tiny_sd_dir), steps=3, grid_size=8, render_size=16,
                       device="cpu", preview_every=3, checkpoint_every=0, guidance_scale=100.0,
                       display_size=32)
    start = {k: v.clone() for k, v in run_sjc(
        SJCConfig(**{**config.to_dict(), "steps": 1, "preview_every": 0}), den).field.state_dict().items()}
    res = run_sjc(config, den, callbacks=Keep())
    assert res.step == 3 and not res.stopped
    state = res.field.state_dict()
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())
    moved = [k for k in state if state[k].shape == start[k].shape and not torch.equal(state[k], start[k])]
    assert moved, "the grids did not change"
    assert np.isfinite(res.losses["score"]) and res.losses["score"] > 0
    assert len(previews) == 1 and previews[0].dtype == np.uint8 and previews[0].shape == (32, 32, 3)
