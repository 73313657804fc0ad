"""The Stable Diffusion path on a CUDA GPU in fp16 (marker ``cuda``; skipped without a GPU).

``bench/gpu_check.sh`` runs these on the GPU machine: the fp16 denoiser against the CPU float32 one, where
every tensor lives (sigma tables on the CPU in float64, renders and grids on the GPU), SJC steps and a full
``generate`` on the GPU.
"""

import numpy as np
import pytest
import torch

from sjc_engine.config import SJCConfig
from sjc_engine.denoisers.loader import load_denoiser, load_from_path
from sjc_engine.optimize import run_sjc
from sjc_engine.paas import paas_grad

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
FP16_ROUNDOFF = 2.0**-11


@pytest.fixture(scope="module")
def sd_cuda(tiny_sd_dir):
    return load_denoiser(str(tiny_sd_dir), device="auto")  # auto -> cuda, half -> fp16


def test_auto_device_is_cuda_fp16(sd_cuda):
    assert sd_cuda.device.type == "cuda" and sd_cuda.dtype == torch.float16
    assert {p.device.type for p in sd_cuda.unet.parameters()} == {"cuda"}
    assert sd_cuda.unet.dtype == sd_cuda.vae.dtype == sd_cuda.text_encoder.dtype == torch.float16
    assert sd_cuda.sigmas.dtype == torch.float64 and sd_cuda.sigmas.device.type == "cpu"


def test_fp16_cuda_matches_cpu_float32(sd_cuda, tiny_sd_dir):
    ref = load_from_path(tiny_sd_dir)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    for sigma in (0.1, 1.0, 10.0):
        d = sd_cuda.denoise(x.cuda(), sigma, sd_cuda.encode_prompt("a red cube"), guidance_scale=7.5)
        assert d.device.type == "cuda" and d.dtype == torch.float32
        r = ref.denoise(x, sigma, ref.encode_prompt("a red cube"), guidance_scale=7.5)
        eps_ref = (x - r) / sigma
        rel = ((d.cpu() - r).norm() / (sigma * eps_ref.norm())).item()
        assert rel <= 8 * FP16_ROUNDOFF * 7.5, (sigma, rel)
    # a CPU input comes back on the CPU
    assert sd_cuda.denoise(x, 1.0, sd_cuda.encode_prompt("a cube")).device.type == "cpu"


def test_paas_on_cuda_with_cpu_generator(sd_cuda):
    y = torch.zeros(1, 4, 16, 16, device="cuda")
    out = paas_grad(sd_cuda, y, 2.0, cond=sd_cuda.encode_prompt("a cube"), guidance_scale=100.0, n_noise=2,
                    generator=torch.Generator().manual_seed(0))
    assert out.grad.device.type == "cuda" and out.grad.dtype == torch.float32 and torch.isfinite(out.grad).all()


def test_decode_on_cuda(sd_cuda):
    rgb = sd_cuda.decode(torch.randn(1, 4, 16, 16, device="cuda"))
    assert rgb.dtype == torch.float32 and rgb.device.type == "cuda" and rgb.shape == (1, 3, 32, 32)
    assert 0 <= rgb.min() and rgb.max() <= 1


def test_sjc_steps_on_cuda(sd_cuda, tiny_sd_dir):
    config = SJCConfig(prompt="a red cube", model=str(tiny_sd_dir), steps=5, grid_size=16, render_size=16,
                       device="auto", preview_every=5, checkpoint_every=0, guidance_scale=100.0)
    res = run_sjc(config, sd_cuda)
    assert res.step == 5
    state = res.field.state_dict()
    assert {v.device.type for v in state.values()} == {"cuda"}
    assert all(torch.isfinite(v).all() for v in state.values())
    assert np.isfinite(res.losses["score"]) and res.losses["score"] > 0


def test_fp16_variant_loads_in_half_on_cuda(tiny_sd_fp16_dir):
    den = load_denoiser(str(tiny_sd_fp16_dir), device="cuda")
    assert den.unet.dtype == torch.float16 and den.device.type == "cuda"
    d = den.denoise(torch.randn(1, 4, 16, 16, device="cuda"), 1.0, den.encode_prompt("a cube"), guidance_scale=7.5)
    assert torch.isfinite(d).all()


def test_generate_on_cuda(tiny_sd_dir, tmp_path):
    from sjc_engine.pipeline import build_config, generate

    config = build_config("a red cube", str(tiny_sd_dir), steps=20, grid_size=32, device="cuda",
                          preview_every=10, checkpoint_every=10, video_frames=4)
    res = generate(config, tmp_path)
    assert res.steps_done == 20 and not res.stopped
    assert {"field.pt", "config.json", "turntable.mp4"} <= set(res.files)
    assert all(p.stat().st_size > 0 for p in res.files.values())
