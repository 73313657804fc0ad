"""Diffusers denoisers loaded from disk through the real loader: SD latent (eps and v), pixel text, pixel uncond."""

import math

import pytest
import torch

from sjc_engine.catalog import ModelNotFoundError
from sjc_engine.denoisers.diffusers_denoiser import DiffusersDenoiser, TextCond
from sjc_engine.denoisers.errors import ModelLoadError
from sjc_engine.denoisers.loader import load_denoiser, load_from_path
from sjc_engine.denoisers.vpve import nearest_tick


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return load_denoiser(str(tiny_sd_dir), device="cpu")


def test_sd_loads_with_all_parts(sd):
    assert isinstance(sd, DiffusersDenoiser)
    assert sd.is_latent and sd.is_text_conditioned and sd.channels == 4 and sd.image_size == 16
    assert sd.dtype == torch.float32 and sd.device.type == "cpu"
    assert sd.sigma_max == pytest.approx(14.6146, abs=1e-3) and sd.sigma_min == pytest.approx(0.02917, abs=1e-4)
    assert sd.scaling_factor == pytest.approx(0.18215)


def test_text_embeddings_cached(sd):
    a = sd.encode_prompt("a red cube")
    b = sd.encode_prompt("a red cube")
    assert isinstance(a, TextCond) and a.cond is b.cond and a.uncond is b.uncond
    assert a.cond.shape == (1, 16, 32) and not torch.equal(a.cond, a.uncond)


def test_denoise_is_x_minus_sigma_eps_with_batched_guidance(sd):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    cond = sd.encode_prompt("a red cube")
    s = 2.0
    t, s_snap = nearest_tick(sd.sigmas, s)
    x_in = x / math.sqrt(1 + s_snap**2)
    ts = torch.full((2,), t)
    with torch.no_grad():
        eps_c = sd.unet(x_in, ts, encoder_hidden_states=cond.cond.expand(2, -1, -1)).sample
        eps_u = sd.unet(x_in, ts, encoder_hidden_states=cond.uncond.expand(2, -1, -1)).sample
    for scale in (1.0, 7.5):
        eps = eps_u + scale * (eps_c - eps_u)
        torch.testing.assert_close(sd.denoise(x, s, cond, guidance_scale=scale), x - s_snap * eps, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="text-conditioned"):
        sd.denoise(x, s, None)


def test_v_prediction_converted_to_eps(tiny_sd_v_dir):
    den = load_from_path(tiny_sd_v_dir)
    assert den.prediction_type == "v_prediction"
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    cond = den.encode_prompt("a cube")
    t, s = nearest_tick(den.sigmas, 1.0)
    abar = float(den.alphas_cumprod[t])
    x_in = x / math.sqrt(1 + s * s)
    with torch.no_grad():
        v = den.unet(x_in, torch.tensor([t]), encoder_hidden_states=cond.cond).sample
    eps = math.sqrt(abar) * v + math.sqrt(1 - abar) * x_in
    torch.testing.assert_close(den.denoise(x, 1.0, cond), x - s * eps, atol=1e-4, rtol=1e-4)


def test_sd_decode_uses_vae_scaling(sd):
    z = torch.randn(1, 4, 16, 16)
    rgb = sd.decode(z)
    assert rgb.shape == (1, 3, 32, 32) and rgb.min() >= 0 and rgb.max() <= 1
    with torch.no_grad():
        ref = ((sd.vae.decode(z / sd.scaling_factor).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(rgb, ref)


def test_pixel_text_model(tiny_pixel_dir):
    den = load_denoiser(str(tiny_pixel_dir), device="cpu")
    assert not den.is_latent and den.is_text_conditioned and den.channels == 3 and den.image_size == 16
    cond = den.encode_prompt("front view of a red cube")
    x = torch.randn(3, 3, 16, 16)
    d = den.denoise(x, 0.5, cond, guidance_scale=3.0)
    assert d.shape == x.shape and torch.isfinite(d).all()
    rgb = den.decode(torch.tensor([-2.0, -1.0, 0.0, 1.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2))
    torch.testing.assert_close(rgb[0, 0].flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0]))


def test_pixel_unconditional_model(tiny_uncond_dir):
    den = load_denoiser(str(tiny_uncond_dir), device="cpu")
    assert not den.is_text_conditioned and den.encode_prompt("anything") is None
    x = torch.randn(2, 3, 16, 16)
    t, s = nearest_tick(den.sigmas, 3.0)
    with torch.no_grad():
        eps = den.unet(x / math.sqrt(1 + s * s), torch.full((2,), t)).sample
    torch.testing.assert_close(den.denoise(x, 3.0), x - s * eps, atol=1e-5, rtol=1e-5)


def test_missing_model_names_the_path(tmp_path):
    where = tmp_path / "nope"
    with pytest.raises(ModelNotFoundError, match=str(where)):
        load_denoiser(str(where), device="cpu")
    with pytest.raises(ModelNotFoundError, match="looked in"):
        load_denoiser("not-a-model", device="cpu", model_dirs=[tmp_path])


def test_single_file_without_local_config_is_an_error(tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "lonely.safetensors"
    save_file({"x": torch.zeros(1)}, f)
    with pytest.raises(ModelLoadError, match="config folder") as e:
        load_from_path(f)
    assert str(tmp_path) not in e.value.public_message


def test_named_model_from_model_dirs(tiny_uncond_dir):
    den = load_denoiser(tiny_uncond_dir.name, device="cpu", model_dirs=[tiny_uncond_dir.parent])
    assert den.channels == 3
