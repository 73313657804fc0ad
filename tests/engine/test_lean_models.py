"""The lean load path (sjc_engine.denoisers.lean): pixel text models without diffusers or transformers.

The embedded model (and the tiny pixel fixture, which differs in block layout, tokenizer and text-encoder sizes)
must load without importing diffusers, transformers or any VAE/autoencoder module, and give the outputs of the
diffusers path (``SJC_LEAN_MODELS=0``) to float rounding: prompt embeddings, guided denoising at several noise
levels and batch sizes. Configs the lean modules do not implement fall back to diffusers; broken weights stay a
one-line ModelLoadError naming the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sjc_engine.catalog import EMBEDDED_DIR, META_FILE
from sjc_engine.denoisers import lean
from sjc_engine.denoisers.errors import ModelLoadError
from sjc_engine.denoisers.loader import LEAN_ENV, lean_unsupported, load_denoiser, load_from_path

ROOT = Path(__file__).resolve().parents[2]
embedded = pytest.mark.skipif(not (EMBEDDED_DIR / META_FILE).is_file(), reason="embedded model not shipped yet")
PROMPTS = ["a red cube", "", "front view of a red cube", "A Blue  TORUS, please!", "overhead view of " * 6, "zzz"]


def _both(path: Path, monkeypatch):
    lean_den = load_from_path(path)
    monkeypatch.setenv(LEAN_ENV, "0")
    ref = load_from_path(path)
    monkeypatch.delenv(LEAN_ENV)
    assert isinstance(lean_den.unet, lean.LeanUNet) and not isinstance(ref.unet, lean.LeanUNet)
    return lean_den, ref


def _check_equal(lean_den, ref, prompts=PROMPTS) -> None:
    assert (lean_den.channels, lean_den.image_size, lean_den.is_latent, lean_den.prediction_type) == (
        ref.channels, ref.image_size, ref.is_latent, ref.prediction_type)
    torch.testing.assert_close(lean_den.sigmas, ref.sigmas, rtol=0, atol=0)
    for p in prompts:
        a, b = lean_den.encode_prompt(p), ref.encode_prompt(p)
        torch.testing.assert_close(a.cond, b.cond, rtol=0, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    size, ch = ref.image_size, ref.channels
    for B in (1, 3):
        for sigma in (0.05, 0.7, 5.0):
            for scale in (1.0, 10.0):
                x = torch.randn(B, ch, size, size, generator=g) * (1 + sigma)
                p = prompts[B % len(prompts)]
                d_lean = lean_den.denoise(x, sigma, lean_den.encode_prompt(p), guidance_scale=scale)
                d_ref = ref.denoise(x, sigma, ref.encode_prompt(p), guidance_scale=scale)
                torch.testing.assert_close(d_lean, d_ref, rtol=0, atol=1e-5 * (1 + sigma) * scale)


@embedded
def test_embedded_loads_lean_with_the_diffusers_outputs(monkeypatch):
    _check_equal(*_both(EMBEDDED_DIR, monkeypatch))


def test_tiny_pixel_model_loads_lean_with_the_diffusers_outputs(tiny_pixel_dir, monkeypatch):
    assert lean_unsupported(tiny_pixel_dir) is None
    _check_equal(*_both(tiny_pixel_dir, monkeypatch), prompts=["red cube", "", "front view of a blue torus x y z"])


def test_odd_sizes_and_scalar_timesteps_match_diffusers(tiny_pixel_dir, monkeypatch):
    lean_den, ref = _both(tiny_pixel_dir, monkeypatch)
    ctx = torch.cat([lean_den.encode_prompt("a red cube").cond, lean_den.encode_prompt("").cond])
    x = torch.randn(2, 3, 12, 20)  # not a multiple of 2**upsamplers: diffusers passes sizes to the upsamplers
    with torch.no_grad():
        for t in (torch.tensor([3, 700]), 10, torch.tensor(999)):
            torch.testing.assert_close(lean_den.unet(x, t, ctx), ref.unet(x, t, encoder_hidden_states=ctx).sample,
                                       rtol=0, atol=1e-5)


@embedded
def test_pixel_model_load_imports_no_vae_diffusers_or_transformers():
    code = (
        "import sys; from sjc_engine.denoisers.loader import load_denoiser\n"
        "den = load_denoiser('embedded', device='cpu', half=False)\n"
        "den.denoise(__import__('torch').zeros(1, 3, 32, 32), 1.0, den.encode_prompt('a red cube'), 10.0)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('diffusers', 'transformers')\n"
        "             or 'autoencoder' in m or m.endswith('.vae')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def _modules_after_load(path: Path, env: dict[str, str] | None = None) -> list[str]:
    import os

    code = ("import sys; from sjc_engine.denoisers.loader import load_from_path\n"
            f"load_from_path({str(path)!r})\n"
            "print(sorted(m for m in sys.modules if 'autoencoder' in m or m.endswith('.vae')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_pixel_models_on_the_diffusers_path_import_no_autoencoder(tiny_uncond_dir, tiny_pixel_dir):
    assert _modules_after_load(tiny_uncond_dir) == "[]"  # UNet2DModel DDPM
    assert _modules_after_load(tiny_pixel_dir, {LEAN_ENV: "0"}) == "[]"  # text-conditioned, through diffusers


def test_tokenizer_matches_transformers(tiny_pixel_dir):
    from transformers import AutoTokenizer

    folders = [tiny_pixel_dir / "tokenizer"] + ([EMBEDDED_DIR / "tokenizer"] if (EMBEDDED_DIR / META_FILE).is_file() else [])
    for folder in folders:
        ours, theirs = lean.LeanTokenizer(folder), AutoTokenizer.from_pretrained(folder, local_files_only=True)
        assert ours.pad_token == theirs.pad_token and ours.model_max_length == theirs.model_max_length
        for p in PROMPTS:
            for n in (4, 8, 16):
                kw = dict(padding="max_length", max_length=n, truncation=True, return_tensors="pt")
                assert torch.equal(ours(p, **kw).input_ids, theirs(p, **kw).input_ids), (folder, p, n)


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "m"))


def _edit(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("where, changes", [
    ("unet/config.json", {"upcast_attention": True}),
    ("unet/config.json", {"some_new_flag": 1}),
    ("unet/config.json", {"center_input_sample": True}),
    ("text_encoder/config.json", {"hidden_act": "gelu_new"}),
    ("tokenizer/tokenizer_config.json", {"padding_side": "left"}),
    ("scheduler/scheduler_config.json", {"beta_schedule": "squaredcos_cap_v2"}),
])
def test_what_lean_does_not_implement_loads_through_diffusers(tiny_pixel_dir, tmp_path, where, changes):
    folder = _copy(tiny_pixel_dir, tmp_path)
    _edit(folder / where, **changes)
    if not where.startswith("scheduler"):
        assert lean_unsupported(folder) is not None
    den = load_from_path(folder)
    assert not isinstance(den.unet, lean.LeanUNet)


def test_bin_weights_load_through_diffusers(tiny_pixel_dir, tmp_path):
    from safetensors.torch import load_file

    folder = _copy(tiny_pixel_dir, tmp_path)
    st = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(st), st.with_suffix(".bin"))
    st.unlink()
    assert not isinstance(load_from_path(folder).unet, lean.LeanUNet)


@pytest.mark.parametrize("component, name", [("unet", "diffusion_pytorch_model.safetensors"),
                                             ("text_encoder", "model.safetensors")])
def test_broken_weights_name_the_file_on_the_lean_path(tiny_pixel_dir, tmp_path, component, name):
    folder = _copy(tiny_pixel_dir, tmp_path)
    f = folder / component / name
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match=f"{component}/{name}"):
        load_from_path(folder)


def test_mismatched_weights_are_a_load_error_naming_the_folder(tiny_pixel_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_pixel_dir, tmp_path)
    f = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(f)
    state.pop("conv_in.bias")
    save_file(state, f)
    with pytest.raises(ModelLoadError, match="could not be loaded") as e:
        load_from_path(folder)
    assert e.value.file.name == "unet"


def test_context_cache_follows_the_values(tiny_pixel_dir):
    den = load_from_path(tiny_pixel_dir)
    unet = den.unet
    a, b = den.encode_prompt("a red cube").cond, den.encode_prompt("a blue torus").cond
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        fresh = {k: lean.LeanUNet.forward(unet, x, 5, c) for k, c in (("a", a), ("b", b))}
        for _ in range(2):
            for k, c in (("a", a), ("b", b), ("a", a.clone())):
                assert torch.equal(unet(x, 5, c), fresh[k])
        c = a.clone()
        unet(x, 5, c)
        c.copy_(b)  # the same tensor changed in place: a new context
        assert torch.equal(unet(x, 5, c), fresh["b"])
        for i in range(unet.CONTEXT_CACHE + 3):
            unet(x, 5, a + i)
        assert len(unet._ctx_cache) == unet.CONTEXT_CACHE
        unet.to(torch.float64)  # moving the module drops the cache (its tensors would be stale)
        assert unet._ctx_cache == []
        assert unet(x.double(), 5, a.double()).dtype == torch.float64


def test_lean_half_precision_on_the_cpu(tiny_pixel_dir):
    den = load_denoiser(str(tiny_pixel_dir), device="cpu", dtype=torch.bfloat16)
    assert isinstance(den.unet, lean.LeanUNet) and den.unet.dtype == den.text_encoder.dtype == torch.bfloat16
    d = den.denoise(torch.randn(2, 3, 16, 16), 1.0, den.encode_prompt("a red cube"), guidance_scale=5.0)
    assert d.dtype == torch.float32 and torch.isfinite(d).all()


def test_unet_traces_itself_after_repeated_calls_with_equal_outputs(tiny_pixel_dir):
    den = load_from_path(tiny_pixel_dir)
    unet = den.unet
    assert unet.trace
    unet.TRACE_AFTER = 3
    conds = [den.encode_prompt(p) for p in ("a red cube", "front view of a blue torus")]
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    calls = [(0.3 + 0.4 * i, conds[i % 2]) for i in range(8)]
    got = [den.denoise(x, s, c, guidance_scale=7.0) for s, c in calls]
    assert len(unet._traces) == 1 and all(unet._traces.values())
    unet.trace = False
    want = [den.denoise(x, s, c, guidance_scale=7.0) for s, c in calls]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    unet.trace = True
    with torch.enable_grad():  # only inference calls trace (and only they use the trace)
        unet(torch.randn(1, 3, 16, 16), torch.tensor([4]), conds[0].cond)
    assert len(unet._traces) == 1
    unet.to(torch.float32)
    assert unet._traces == {} and unet._calls == {}


def test_a_trace_uses_the_parameters_own_weights(tiny_pixel_dir):
    """The traced function takes the weights as the parameters' tensors: an in-place change of one (a loaded state
    dict, say) shows in the traced calls as in eager ones; the weights need no gradient (inference only)."""
    den = load_from_path(tiny_pixel_dir)
    unet = den.unet
    assert not any(p.requires_grad for p in unet.parameters())
    unet.TRACE_AFTER = 1
    cond = den.encode_prompt("a red cube")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    before = den.denoise(x, 0.5, cond, guidance_scale=4.0)
    assert len(unet._traces) == 1 and all(unet._traces.values())
    with torch.no_grad():
        unet.conv_in.weight.mul_(1.5)
        unet.up_blocks[-1].resnets[0].conv1.bias.add_(0.1)
    traced = den.denoise(x, 0.5, cond, guidance_scale=4.0)
    unet.trace = False
    eager = den.denoise(x, 0.5, cond, guidance_scale=4.0)
    assert (traced - before).abs().max() > 1e-3  # the change is seen ...
    torch.testing.assert_close(traced, eager, rtol=0, atol=1e-6)  # ... as eager calls see it


def test_trace_can_be_turned_off(tiny_pixel_dir, monkeypatch):
    from sjc_engine.denoisers.loader import LEAN_TRACE_ENV

    monkeypatch.setenv(LEAN_TRACE_ENV, "0")
    den = load_from_path(tiny_pixel_dir)
    den.unet.TRACE_AFTER = 1
    den.denoise(torch.randn(1, 3, 16, 16), 1.0, den.encode_prompt("a red cube"), guidance_scale=3.0)
    assert den.unet.trace is False and den.unet._traces == {}


def test_prompt_embeddings_are_computed_once_per_prompt(tiny_pixel_dir):
    den = load_from_path(tiny_pixel_dir)
    seen = []
    den.text_encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    for _ in range(5):
        for view in ("front", "side", "backside", "overhead"):
            den.encode_prompt(f"{view} view of a red cube")
        den.encode_prompts(["front view of a red cube", "side view of a red cube"])
    assert len(seen) == 5  # four view prompts and the empty one


def test_guidance_branches_side_by_side_give_the_batched_output(tiny_pixel_dir, monkeypatch):
    """With threads beyond torch's own (sjc_engine.threads), the uncond and cond branches run on two threads:
    the same guided output as the one (2B)-batch call, also once the UNet has traced itself from both threads."""
    from sjc_engine import parallel

    den = load_from_path(tiny_pixel_dir)
    den.unet.TRACE_AFTER = 4
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    conds = [den.encode_prompt(p) for p in ("a red cube", "front view of a blue torus")]
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    calls = [(0.2 + 0.3 * i, conds[i % 2]) for i in range(6)]
    sizes: list[int] = []
    real = den._unet

    def counting(x_in, t, context):
        sizes.append(x_in.shape[0])
        return real(x_in, t, context)

    try:
        parallel.set_workers(1)
        batched = [den.denoise(x, s, c, guidance_scale=5.0) for s, c in calls]
        monkeypatch.setattr(den, "_unet", counting)
        parallel.set_workers(2)
        side_by_side = [den.denoise(x, s, c, guidance_scale=5.0) for s, c in calls]
    finally:
        parallel.set_workers(None)
    assert sizes == [3] * (2 * len(calls))  # two calls of batch B per step, none of 2B
    traced = sorted(sig[0][0] for sig, t in den.unet._traces.items() if t)
    assert traced == [3, 6]  # the 2B batch, then the B-sized branches once (whichever thread got there first)
    for a, b in zip(batched, side_by_side):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # to rounding (kernels differ by batch size), x5 guidance
