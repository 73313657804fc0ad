"""Stable Diffusion folders as downloads come: fp16 variants and .bin files load; broken files fail in one line.

Every failure of a model that is there (truncated safetensors, garbage .bin, a missing weights file, a missing
scheduler, unreadable JSON) is a ``ModelLoadError`` whose message names the file and whose public message
names it relative to the model folder, without server paths; the CLI prints it on one line and exits 2.
"""

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from sjc_engine.cli import main
from sjc_engine.denoisers.errors import ModelLoadError
from sjc_engine.denoisers.loader import load_denoiser, load_from_path
from sjc_engine.denoisers.weights import pick_variant

UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture
def sd_copy(tiny_sd_dir, tmp_path) -> Path:
    """A private copy of the tiny SD folder to break."""
    return Path(shutil.copytree(tiny_sd_dir, tmp_path / "sd"))


def _denoise(den, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
    return den.denoise(x, 1.5, den.encode_prompt("a red cube"), guidance_scale=7.5)


def test_fp16_variant_folder_loads_and_matches(tiny_sd_fp16_dir, tiny_sd_dir):
    names = sorted(p.name for p in tiny_sd_fp16_dir.rglob("*.safetensors"))
    assert names == ["diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                     "model.fp16.safetensors"]
    assert pick_variant(tiny_sd_fp16_dir / "unet") == "fp16"
    den = load_from_path(tiny_sd_fp16_dir)  # fp32 on the CPU, from half-precision files
    ref = load_from_path(tiny_sd_dir)
    assert den.unet.dtype == torch.float32 and den.vae is not None
    for name, p in ref.unet.state_dict().items():  # the same seed, rounded to fp16 when saved
        torch.testing.assert_close(den.unet.state_dict()[name], p.half().float())
    d, d_ref = _denoise(den), _denoise(ref)
    assert d.shape == (1, 4, 16, 16) and torch.isfinite(d).all()
    torch.testing.assert_close(d, d_ref, atol=2e-2, rtol=1e-2)


def test_variant_preferred_only_for_half_precision(sd_copy):
    unet = sd_copy / "unet"
    shutil.copy(unet / "diffusion_pytorch_model.safetensors", unet / "diffusion_pytorch_model.fp16.safetensors")
    assert pick_variant(unet, prefer_half=False) is None
    assert pick_variant(unet, prefer_half=True) == "fp16"


def test_bin_weights_load(tiny_sd_bin_dir, tiny_sd_dir):
    assert (tiny_sd_bin_dir / "unet" / "diffusion_pytorch_model.bin").is_file()
    assert (tiny_sd_bin_dir / "text_encoder" / "pytorch_model.bin").is_file()
    assert not list(tiny_sd_bin_dir.rglob("*.safetensors"))
    torch.testing.assert_close(_denoise(load_from_path(tiny_sd_bin_dir)), _denoise(load_from_path(tiny_sd_dir)))


def _expect_load_error(folder: Path, file: Path, match: str) -> ModelLoadError:
    with pytest.raises(ModelLoadError, match=match) as info:
        load_denoiser(str(folder), device="cpu")
    e = info.value
    assert e.file == folder / file and str(folder / file) in str(e)
    assert "\n" not in str(e) and "\n" not in e.public_message
    assert str(folder) not in e.public_message and file.as_posix() in e.public_message
    assert e.public_message.startswith(f"model {folder.name!r} could not be loaded: ")  # a path's last part only
    return e


def test_truncated_safetensors_names_the_file(sd_copy):
    f = sd_copy / UNET_WEIGHTS
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    e = _expect_load_error(sd_copy, UNET_WEIGHTS, "truncated safetensors")
    assert e.public_message.endswith(f"{UNET_WEIGHTS.as_posix()}: {e.reason}")


def test_garbage_bin_names_the_file(sd_copy):
    (sd_copy / UNET_WEIGHTS).unlink()
    bad = Path("unet") / "diffusion_pytorch_model.bin"
    (sd_copy / bad).write_bytes(b"not a checkpoint " * 64)
    _expect_load_error(sd_copy, bad, "PyTorch weights file")


def test_truncated_text_encoder_names_the_file(sd_copy):
    f = sd_copy / "text_encoder" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:5])
    _expect_load_error(sd_copy, Path("text_encoder") / "model.safetensors", "truncated safetensors")


def test_missing_weights_names_the_folder(sd_copy):
    (sd_copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    _expect_load_error(sd_copy, Path("vae"), "no weights file")


def test_missing_scheduler_and_bad_json(sd_copy):
    (sd_copy / "scheduler" / "scheduler_config.json").unlink()
    _expect_load_error(sd_copy, Path("scheduler") / "scheduler_config.json", "file missing")
    (sd_copy / "unet" / "config.json").write_text("{not json")
    _expect_load_error(sd_copy, Path("unet") / "config.json", "not valid JSON")


def test_corrupt_safetensors_payload_is_caught_by_the_library_guard(sd_copy):
    f = sd_copy / UNET_WEIGHTS  # header intact and the length right, but a tensor's dtype field corrupted
    data = f.read_bytes()
    f.write_bytes(data.replace(b'"dtype":"F32"', b'"dtype":"Q32"', 1))
    e = _expect_load_error(sd_copy, Path("unet"), "could not be loaded")
    assert e.detail and "Q32" not in e.public_message


def test_public_message_names_the_model(sd_copy):
    f = sd_copy / UNET_WEIGHTS
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ModelLoadError) as info:
        load_denoiser(sd_copy.name, device="cpu", model_dirs=[sd_copy.parent])
    assert info.value.public_message.startswith("model 'sd' could not be loaded: unet/diffusion_pytorch_model.safetensors")
    assert str(sd_copy.parent) not in info.value.public_message


def test_truncated_single_file(tmp_path):
    f = tmp_path / "sd15.safetensors"
    f.write_bytes((1000).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelLoadError, match="sd15.safetensors: truncated or corrupted safetensors"):
        load_from_path(f)


def test_cli_prints_one_line_and_exits_2(sd_copy, tmp_path, capsys):
    f = sd_copy / UNET_WEIGHTS
    f.write_bytes(f.read_bytes()[:1000])
    rc = main(["generate", "a cube", "--model", str(sd_copy), "--steps", "2", "--out", str(tmp_path / "o"),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1
    assert errors[0].startswith(f"sjc: error: cannot load model file {f}: truncated or corrupted safetensors file")


def _shard_unet(folder: Path, variant: str | None) -> list[Path]:
    """Re-save ``folder/unet`` in several shards with an index (as large downloads come)."""
    from diffusers import UNet2DConditionModel

    unet_dir = folder / "unet"
    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    (unet_dir / "diffusion_pytorch_model.safetensors").unlink()
    unet.save_pretrained(unet_dir, max_shard_size="100KB", variant=variant)
    return sorted(unet_dir.glob("*.safetensors"))


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_sharded_weights_load(sd_copy, tiny_sd_dir, variant):
    shards = _shard_unet(sd_copy, variant)
    assert len(shards) > 1 and list((sd_copy / "unet").glob("*.index*.json"))
    assert pick_variant(sd_copy / "unet") == variant
    torch.testing.assert_close(_denoise(load_from_path(sd_copy)), _denoise(load_from_path(tiny_sd_dir)))


def test_truncated_shard_names_the_shard(sd_copy):
    shard = _shard_unet(sd_copy, "fp16")[1]
    shard.write_bytes(shard.read_bytes()[:-10])
    _expect_load_error(sd_copy, shard.relative_to(sd_copy), "truncated safetensors")


def test_load_error_survives_pickling(tmp_path):
    e = ModelLoadError(tmp_path / "m" / "unet" / "w.safetensors", "truncated", root=tmp_path / "m", model="m",
                       detail="OSError: at /srv/x")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is ModelLoadError and str(back) == str(e) and back.public_message == e.public_message
    assert back.public_message == "model 'm' could not be loaded: unet/w.safetensors: truncated"
