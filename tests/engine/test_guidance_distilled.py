"""A guidance-distilled UNet (``"guidance_distilled": {"scale": s}`` in ``sjc_model.json``): its conditional branch
gives scale ``s``, so that scale is one call of one branch; any other scale ``w`` is ``eps_u + (w / s) (eps_s -
eps_u)`` from its two branches; the batch's halves on two threads equal one call; a bad entry is a load error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sjc_engine import parallel
from sjc_engine.denoisers import lean
from sjc_engine.denoisers.errors import ModelLoadError
from sjc_engine.denoisers.loader import LEAN_ENV, load_from_path

SCALE = 4.0
PROMPTS = ["a red cube", "front view of a red cube", "a blue torus"]


def _with_meta(src: Path, dst: Path, entry) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "sjc_model.json").read_text())
    meta["guidance_distilled"] = entry
    (dst / "sjc_model.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def distilled_dir(tiny_pixel_dir, tmp_path_factory) -> Path:
    """The tiny pixel model declared distilled at scale 4 (the weights need no training for the arithmetic)."""
    return _with_meta(tiny_pixel_dir, tmp_path_factory.mktemp("distilled") / "tiny-gd", {"scale": SCALE, "steps": 0})


def _counting(den, monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = den._unet

    def counting(x_in, t, context):
        sizes.append(x_in.shape[0])
        return real(x_in, t, context)

    monkeypatch.setattr(den, "_unet", counting)
    return sizes


def test_the_distilled_scale_is_one_call_other_scales_combine_the_branches(distilled_dir, monkeypatch) -> None:
    den = load_from_path(distilled_dir)
    assert den.distilled_scale == SCALE
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = den.encode_prompts(PROMPTS)
    b = cond.batch(3)
    t = 400
    u, s = den._unet(x, t, b.uncond), den._unet(x, t, b.cond)  # eps_u, and the branch's own guided eps_s
    sizes = _counting(den, monkeypatch)
    parallel.set_workers(1)
    try:
        torch.testing.assert_close(den.model_output(x, t, cond, SCALE), s, rtol=0, atol=0)
        assert sizes == [3], "one call of one branch"
        for w in (1.0, 2.0, 8.0):
            torch.testing.assert_close(den.model_output(x, t, cond, w), u + (w / SCALE) * (s - u), rtol=0, atol=2e-5)
    finally:
        parallel.set_workers(None)
    assert (u - s).abs().max() > 1e-3  # the branches differ: the check above can tell the scales apart


def test_lean_and_diffusers_paths_agree(distilled_dir, monkeypatch) -> None:
    lean_den = load_from_path(distilled_dir)
    monkeypatch.setenv(LEAN_ENV, "0")
    ref = load_from_path(distilled_dir)
    monkeypatch.delenv(LEAN_ENV)
    assert isinstance(lean_den.unet, lean.LeanUNet) and not isinstance(ref.unet, lean.LeanUNet)
    assert lean_den.distilled_scale == ref.distilled_scale == SCALE
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for w in (1.0, SCALE, 7.5):
        for sigma in (0.1, 1.5):
            a = lean_den.denoise(x, sigma, lean_den.encode_prompts(PROMPTS), guidance_scale=w)
            b = ref.denoise(x, sigma, ref.encode_prompts(PROMPTS), guidance_scale=w)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * (1 + sigma) * w)


def test_halves_side_by_side_equal_one_call(distilled_dir, monkeypatch) -> None:
    den = load_from_path(distilled_dir)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    cond = den.encode_prompts(PROMPTS + ["a green sphere", "a red cube"])
    try:
        parallel.set_workers(1)
        one = den.model_output(x, 300, cond, SCALE)
        sizes = _counting(den, monkeypatch)
        parallel.set_workers(2)
        two = den.model_output(x, 300, cond, SCALE)
    finally:
        parallel.set_workers(None)
    assert sorted(sizes) == [2, 3], "the batch's halves, one branch"
    torch.testing.assert_close(one, two, rtol=1e-4, atol=1e-5)  # to rounding (kernels differ by batch size)


@pytest.mark.parametrize("entry", [{"scale": 1.0}, {"scale": "5"}, {}, 5.0, {"scale": True}])
def test_a_bad_guidance_distilled_entry_is_a_load_error(tiny_pixel_dir, tmp_path, entry) -> None:
    folder = _with_meta(tiny_pixel_dir, tmp_path / "m", entry)
    with pytest.raises(ModelLoadError, match="sjc_model.json"):
        load_from_path(folder)
