"""Latent models render at their UNet's size: SD 2.x 768 (sample_size 96) at 96, not at 64 and resized."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sjc_engine.catalog import resolve_model
from sjc_engine.denoisers.loader import load_from_path
from sjc_engine.optimize import run_sjc
from sjc_engine.pipeline import build_config
from tests.fixtures.models import build_tiny_sd

SIZE = 24  # stands in for SD 2.x's 96 (any size other than the default 64 and the tiny models' 16)


@pytest.fixture(scope="module")
def sd_24(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-24", prediction_type="v_prediction",
                         sample_size=SIZE)


def test_render_size_defaults_to_the_unet_sample_size(sd_24, tiny_sd_dir):
    assert resolve_model(str(sd_24)).defaults == {"render_size": SIZE}
    assert build_config("a cube", str(sd_24)).render_size == SIZE
    assert build_config("a cube", str(tiny_sd_dir)).render_size == 16
    assert build_config("a cube", str(sd_24), render_size=32).render_size == 32  # an explicit value wins


def test_the_unet_sees_the_rendering_unresized(sd_24):
    den = load_from_path(sd_24)
    assert den.image_size == SIZE
    seen = []
    den.unet.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    config = build_config("a cube", str(sd_24), steps=2, grid_size=8, device="cpu", preview_every=0,
                          checkpoint_every=0, guidance_scale=100.0)
    res = run_sjc(config, den)
    assert res.step == 2
    assert seen == [(2, 4, SIZE, SIZE)] * 2  # cond + uncond batched, at the UNet's own size


def test_single_file_takes_the_size_from_its_config_folder(sd_24, tmp_path):
    shutil.copytree(sd_24, tmp_path / "sd2")
    f = tmp_path / "sd2.safetensors"
    save_file({"x": torch.zeros(1)}, f)
    assert resolve_model(str(f)).defaults == {"render_size": SIZE}


def test_model_metadata_keeps_the_unet_size_unless_it_sets_one(sd_24, tmp_path):
    folder = Path(shutil.copytree(sd_24, tmp_path / "sd-meta"))
    meta = folder / "sjc_model.json"
    meta.write_text(json.dumps({"kind": "latent", "defaults": {"guidance_scale": 50.0}}))
    assert resolve_model(str(folder)).defaults == {"render_size": SIZE, "guidance_scale": 50.0}
    meta.write_text(json.dumps({"kind": "latent", "defaults": {"render_size": 32}}))
    assert resolve_model(str(folder)).defaults == {"render_size": 32}
