"""A guidance-distilled UNet (``time_cond_proj_dim``, ``guidance_embedding`` in ``sjc_model.json``): one call of
one branch, told the scale, gives the guided prediction; the lean path equals diffusers'; scales outside the
distilled range combine the two branches at scale 1; the batch's halves on two threads equal one call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sjc_engine import parallel
from sjc_engine.denoisers import lean
from sjc_engine.denoisers.errors import ModelLoadError
from sjc_engine.denoisers.guidance import guidance_embedding
from sjc_engine.denoisers.loader import LEAN_ENV, load_from_path
from sjc_engine.denoisers.vpve import nearest_tick, scale_input

DIM = 8


@pytest.fixture(scope="module")
def distilled_dir(tiny_pixel_dir, tmp_path_factory) -> Path:
    """The tiny pixel model with a guidance embedding (random projection, so the scale matters)."""
    from diffusers import UNet2DConditionModel

    from training.distill import student_from

    folder = tmp_path_factory.mktemp("distilled") / "tiny-gd"
    shutil.copytree(tiny_pixel_dir, folder)
    teacher = UNet2DConditionModel.from_pretrained(tiny_pixel_dir / "unet")
    student = student_from(teacher, DIM)
    assert student.time_embedding.cond_proj.weight.abs().max() == 0  # it starts as the conditional branch
    torch.manual_seed(1)
    with torch.no_grad():
        student.time_embedding.cond_proj.weight.normal_(0, 0.5)
    shutil.rmtree(folder / "unet")
    student.save_pretrained(folder / "unet")
    meta = json.loads((folder / "sjc_model.json").read_text())
    meta["guidance_embedding"] = {"dim": DIM, "w_range": [1.0, 8.0]}
    (folder / "sjc_model.json").write_text(json.dumps(meta))
    return folder


def test_guidance_embedding_values() -> None:
    e = guidance_embedding(torch.tensor([1.0, 5.0]), 6)
    assert e.shape == (2, 6)
    assert torch.equal(e[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))  # w = 1: sin 0, cos 0
    torch.testing.assert_close(e[1, 0], torch.sin(torch.tensor(4000.0)))  # 1000 (w - 1) at frequency 1
    torch.testing.assert_close(e[1, 2], torch.sin(torch.tensor(4000.0 / 10000.0)))  # ... and 1 / 10000
    with pytest.raises(ValueError, match="even"):
        guidance_embedding(torch.ones(1), 5)


def test_one_call_gives_the_guided_prediction_lean_and_diffusers_alike(distilled_dir, monkeypatch) -> None:
    lean_den = load_from_path(distilled_dir)
    monkeypatch.setenv(LEAN_ENV, "0")
    ref = load_from_path(distilled_dir)
    monkeypatch.delenv(LEAN_ENV)
    assert isinstance(lean_den.unet, lean.LeanUNet) and not isinstance(ref.unet, lean.LeanUNet)
    assert lean_den.guidance_range == ref.guidance_range == (1.0, 8.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 16, 16, generator=g)
    cond = ref.encode_prompts(["a red cube", "front view of a red cube", "a blue torus"])
    calls: list[tuple[int, torch.Tensor | None]] = []
    real = ref._unet

    def counting(x_in, t, context, guidance_scale=None):
        calls.append((x_in.shape[0], guidance_scale))
        return real(x_in, t, context, guidance_scale)

    monkeypatch.setattr(ref, "_unet", counting)
    outs = {}
    for w in (1.0, 3.0, 8.0):
        for sigma in (0.1, 1.5):
            a = lean_den.denoise(x, sigma, lean_den.encode_prompts(["a red cube", "front view of a red cube",
                                                                    "a blue torus"]), guidance_scale=w)
            b = ref.denoise(x, sigma, cond, guidance_scale=w)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * (1 + sigma) * w)
            outs[w, sigma] = b
    assert calls == [(3, None)] * 2 + [(3, 3.0)] * 2 + [(3, 8.0)] * 2  # one call of one branch each
    assert (outs[3.0, 0.1] - outs[8.0, 0.1]).abs().max() > 1e-3, "the scale changes the prediction"
    # by hand: diffusers' UNet told w (timestep_cond), through the VP -> VE conversion
    t, sigma = nearest_tick(ref.sigmas, 1.5)
    ts = torch.full((3,), t, dtype=torch.long)
    emb = guidance_embedding(torch.full((3,), 3.0), DIM)
    eps = ref.unet(scale_input(x, sigma), ts, cond.cond, timestep_cond=emb).sample
    torch.testing.assert_close(outs[3.0, 1.5], x - sigma * eps, rtol=0, atol=1e-5)


def test_scales_outside_the_distilled_range_combine_the_branches(distilled_dir) -> None:
    den = load_from_path(distilled_dir)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    cond = den.encode_prompt("a red cube")
    t = 500
    x_in = x.clone()
    b = cond.batch(2)
    u, c = den._unet(x_in, t, b.uncond), den._unet(x_in, t, b.cond)  # both told w = 1
    torch.testing.assert_close(den.model_output(x_in, t, cond, 12.0), u + 12.0 * (c - u), rtol=0, atol=1e-4)  # x12 rounding
    assert (den.model_output(x_in, t, cond, 8.0) - (u + 8.0 * (c - u))).abs().max() > 1e-3  # in range: distilled


def test_halves_side_by_side_equal_one_call(distilled_dir, monkeypatch) -> None:
    den = load_from_path(distilled_dir)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    cond = den.encode_prompts(["a red cube", "side view of a red cube", "a blue torus", "a green sphere", "a red cube"])
    try:
        parallel.set_workers(1)
        one = den.model_output(x, 300, cond, 5.0)
        parallel.set_workers(2)
        sizes: list[int] = []
        real = den._unet
        monkeypatch.setattr(den, "_unet", lambda x_in, t, ctx, w=None: sizes.append(x_in.shape[0]) or real(x_in, t, ctx, w))
        two = den.model_output(x, 300, cond, 5.0)
    finally:
        parallel.set_workers(None)
    assert sorted(sizes) == [2, 3]
    torch.testing.assert_close(one, two, rtol=1e-4, atol=1e-5)


def test_a_guidance_embedding_without_the_unet_for_it_is_a_load_error(tiny_pixel_dir, tmp_path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_pixel_dir, folder)
    meta = json.loads((folder / "sjc_model.json").read_text())
    meta["guidance_embedding"] = {"dim": DIM, "w_range": [1.0, 8.0]}
    (folder / "sjc_model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="sjc_model.json"):
        load_from_path(folder)
