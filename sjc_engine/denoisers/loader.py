"""Load a denoiser by name or local path. Nothing is ever downloaded.

Layouts understood (all local, ``local_files_only=True``):

- a diffusers Stable Diffusion folder (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``): latent model;
- a folder with ``unet/`` (``UNet2DConditionModel``), ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and no
  ``vae/``: text-conditioned pixel model (the embedded model);
- a folder with ``unet/`` (``UNet2DModel``) and ``scheduler/``, or a bare ``UNet2DModel`` folder
  (``config.json`` + weights) beside a ``scheduler_config.json``: unconditional pixel DDPM;
- a single ``.safetensors``/``.ckpt`` Stable Diffusion checkpoint, loaded with
  ``StableDiffusionPipeline.from_single_file``. Diffusers would fetch the component configs from the Hub, so a
  local diffusers config folder is required: a folder named like the file without its suffix
  (``sd15.safetensors`` -> ``sd15/``), or the file's own folder when it holds ``model_index.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from sjc_engine.catalog import ModelNotFoundError, resolve_model
from sjc_engine.denoisers.base import Denoiser
from sjc_engine.denoisers.diffusers_denoiser import DiffusersDenoiser


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA GPU")
    return torch.device(device)


def load_denoiser(
    model: str,
    *,
    device: str = "auto",
    half: bool = True,
    model_dirs: Sequence[str | Path] = (),
) -> Denoiser:
    """Load ``model`` (``"embedded"``, a name under ``model_dirs``, or a local path) as a VE denoiser.

    Args:
        model: what to load; see :func:`sjc_engine.catalog.resolve_model`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        half: fp16 weights on CUDA (always fp32 on CPU).
        model_dirs: folders holding named models.
    """
    info = resolve_model(model, model_dirs)
    dev = pick_device(device)
    dtype = torch.float16 if (half and dev.type == "cuda") else torch.float32
    return load_from_path(info.path, device=dev, dtype=dtype)


def load_from_path(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> DiffusersDenoiser:
    """Load a diffusers folder or single checkpoint file at ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"no model at {path}")
    if path.is_file():
        return _load_single_file(path, device, dtype)
    return _load_folder(path, device, dtype)


def _scheduler(folder: Path):
    from diffusers import DDPMScheduler

    for cfg in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if cfg.is_file():
            # Only the noise schedule matters (betas -> alphas_cumprod, prediction_type); any DDPM-family
            # config (PNDM, DDIM, Euler, ...) carries it.
            return DDPMScheduler.from_config(json.loads(cfg.read_text()))
    raise ModelNotFoundError(f"{folder} has no scheduler/scheduler_config.json (needed for the noise schedule)")


def _unet_class_name(unet_dir: Path) -> str:
    cfg = unet_dir / "config.json"
    if not cfg.is_file():
        raise ModelNotFoundError(f"{unet_dir} has no config.json")
    return json.loads(cfg.read_text()).get("_class_name", "UNet2DConditionModel")


def _load_folder(folder: Path, device: torch.device | str, dtype: torch.dtype) -> DiffusersDenoiser:
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel

    kw = dict(local_files_only=True, torch_dtype=dtype)
    unet_dir = folder / "unet" if (folder / "unet").is_dir() else folder
    class_name = _unet_class_name(unet_dir)
    scheduler = _scheduler(folder)
    if class_name == "UNet2DModel":
        unet = UNet2DModel.from_pretrained(unet_dir, **kw)
        return DiffusersDenoiser(unet, scheduler, device=device, dtype=dtype)
    if class_name != "UNet2DConditionModel":
        raise ValueError(f"{unet_dir}: unsupported UNet class {class_name!r}")
    from transformers import AutoTokenizer, CLIPTextModel

    for sub in ("text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise ModelNotFoundError(f"{folder} has a text-conditioned UNet but no {sub}/ folder")
    unet = UNet2DConditionModel.from_pretrained(unet_dir, **kw)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder / "vae", **kw) if (folder / "vae").is_dir() else None
    return DiffusersDenoiser(unet, scheduler, text_encoder, tokenizer, vae, device=device, dtype=dtype)


def single_file_config_dir(path: Path) -> Path | None:
    """The local diffusers config folder for a single checkpoint file, or ``None``."""
    for cand in (path.with_suffix(""), path.parent):
        if (cand / "model_index.json").is_file():
            return cand
    return None


def _load_single_file(path: Path, device: torch.device | str, dtype: torch.dtype) -> DiffusersDenoiser:
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ModelNotFoundError(f"{path}: a single-file model must be .safetensors or .ckpt")
    config = single_file_config_dir(path)
    if config is None:
        raise ModelNotFoundError(
            f"{path}: a single-file checkpoint needs a local diffusers config folder (model_index.json and the "
            f"component configs) at {path.with_suffix('')} or in {path.parent}; nothing is downloaded"
        )
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(
        str(path), config=str(config), local_files_only=True, torch_dtype=dtype,
        safety_checker=None, requires_safety_checker=False,
    )
    scheduler = _scheduler(config)
    return DiffusersDenoiser(pipe.unet, scheduler, pipe.text_encoder, pipe.tokenizer, pipe.vae, device=device, dtype=dtype)
