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

A text-conditioned pixel model whose configs :mod:`sjc_engine.denoisers.lean` implements (the embedded model)
loads through it, without importing diffusers or transformers (about 0.1 s instead of 3.5 s on two cores), to
the same outputs, and its UNet traces itself once a run has made ``LeanUNet.TRACE_AFTER`` calls of one shape;
``SJC_LEAN_MODELS=0`` turns the lean path off, ``SJC_LEAN_TRACE=0`` only the tracing. Everything else loads
through diffusers.

Component folders saved with ``variant="fp16"`` (``diffusion_pytorch_model.fp16.safetensors``) load as they are
(:mod:`sjc_engine.denoisers.weights`). A model that is there but broken (a truncated or corrupted weights file,
a missing component, an unreadable config) raises :class:`~sjc_engine.denoisers.errors.ModelLoadError`, one
line naming the file; only a model that is not there at all is a ``ModelNotFoundError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from sjc_engine.catalog import ModelNotFoundError, resolve_model
from sjc_engine.denoisers.base import Denoiser
from sjc_engine.denoisers.diffusers_denoiser import DiffusersDenoiser
from sjc_engine.denoisers.errors import ModelLoadError
from sjc_engine.denoisers.weights import check_weights_file, files_to_load, pick_variant

T = TypeVar("T")
LEAN_ENV = "SJC_LEAN_MODELS"
LEAN_TRACE_ENV = "SJC_LEAN_TRACE"  # 0: the lean UNet never traces itself (LeanUNet.TRACE_AFTER)


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
    dtype: torch.dtype | None = None,
) -> Denoiser:
    """Load ``model`` (``"embedded"``, a name under ``model_dirs``, or a local path) as a VE denoiser.

    Args:
        model: what to load; see :func:`sjc_engine.catalog.resolve_model`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        half: fp16 weights on CUDA (fp32 on CPU).
        model_dirs: folders holding named models.
        dtype: an explicit precision instead of ``half``'s choice (e.g. ``torch.bfloat16`` on the CPU).

    Raises ``ModelNotFoundError`` when nothing is there, :class:`ModelLoadError` (with ``model`` set to
    ``model``) when what is there cannot be loaded.
    """
    info = resolve_model(model, model_dirs)
    dev = pick_device(device)
    if dtype is None:
        dtype = torch.float16 if (half and dev.type == "cuda") else torch.float32
    try:
        denoiser = load_from_path(info.path, device=dev, dtype=dtype)
    except ModelLoadError as e:
        e.model = e.model or model
        raise
    denoiser.baked_light = info.baked_light
    return denoiser


def load_from_path(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> DiffusersDenoiser:
    """Load a diffusers folder or single checkpoint file at ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"no model at {path}")
    if path.is_file():
        return _load_single_file(path, device, dtype)
    return _load_folder(path, device, dtype)


def _guarded(what: Path, root: Path, load: Callable[[], T]) -> T:
    """``load()``, with any library error turned into a :class:`ModelLoadError` naming ``what``."""
    try:
        return load()
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - every library failure becomes one typed, one-line error
        raise ModelLoadError(what, "could not be loaded (corrupted, incomplete or an unsupported format)",
                             root=root, detail=f"{type(e).__name__}: {e}") from e


def _read_json(path: Path, root: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(path, "file missing", root=root)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelLoadError(path, "not valid JSON", root=root, detail=str(e)) from e
    if not isinstance(data, dict):
        raise ModelLoadError(path, "not a JSON object", root=root)
    return data


def _scheduler_config(folder: Path, root: Path) -> tuple[Path, dict[str, Any]]:
    """The scheduler config of a model folder (``scheduler/`` or a bare ``scheduler_config.json``) and its path."""
    for cfg in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if cfg.is_file():
            return cfg, _read_json(cfg, root)
    raise ModelLoadError(folder / "scheduler" / "scheduler_config.json",
                         "file missing (the noise schedule is needed)", root=root)


def _scheduler(folder: Path, root: Path):
    # Only the noise schedule matters (betas -> alphas_cumprod, prediction_type); any DDPM-family config (PNDM,
    # DDIM, Euler, ...) carries it.
    cfg, data = _scheduler_config(folder, root)
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    return _guarded(cfg, root, lambda: DDPMScheduler.from_config(data))


def _component_kwargs(folder: Path, root: Path, dtype: torch.dtype) -> dict[str, Any]:
    """``variant=`` (and ``use_safetensors=False`` for ``.bin`` weights) for ``folder``, after checking every
    weights file it will read."""
    variant = pick_variant(folder, prefer_half=dtype != torch.float32, root=root)
    files = files_to_load(folder, variant)
    for f in files:
        check_weights_file(f, root=root)
    kw: dict[str, Any] = {"variant": variant} if variant else {}
    if files and all(f.suffix == ".bin" for f in files):
        kw["use_safetensors"] = False
    return kw


def _load_folder(folder: Path, device: torch.device | str, dtype: torch.dtype) -> DiffusersDenoiser:
    unet_dir = folder / "unet" if (folder / "unet").is_dir() else folder
    unet_cfg = _read_json(unet_dir / "config.json", folder)
    class_name = unet_cfg.get("_class_name", "UNet2DConditionModel")
    _, sched_cfg = _scheduler_config(folder, folder)
    if class_name not in ("UNet2DModel", "UNet2DConditionModel"):
        raise ModelLoadError(unet_dir / "config.json", f"unsupported UNet class {class_name!r}", root=folder)
    if class_name == "UNet2DConditionModel" and lean_enabled():
        den = _load_lean(folder, unet_dir, unet_cfg, sched_cfg, device, dtype)
        if den is not None:
            return den
    # Each class from its own module: the diffusers package root would import every autoencoder for AutoencoderKL
    # (pixel models have no VAE).
    if class_name == "UNet2DModel":
        from diffusers.models.unets.unet_2d import UNet2DModel as unet_cls
    else:
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel as unet_cls

    kw = dict(local_files_only=True, torch_dtype=dtype)
    scheduler = _scheduler(folder, folder)
    unet_kw = _component_kwargs(unet_dir, folder, dtype)
    unet = _guarded(unet_dir, folder, lambda: unet_cls.from_pretrained(unet_dir, **kw, **unet_kw))
    if class_name == "UNet2DModel":
        return DiffusersDenoiser(unet, scheduler, device=device, dtype=dtype)
    from transformers.models.auto.tokenization_auto import AutoTokenizer
    from transformers.models.clip.modeling_clip import CLIPTextModel

    for sub in ("text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise ModelLoadError(folder / sub, "folder missing (a text-conditioned UNet needs it)", root=folder)
    te_dir, tok_dir, vae_dir = folder / "text_encoder", folder / "tokenizer", folder / "vae"
    te_kw = _component_kwargs(te_dir, folder, dtype)
    text_encoder = _guarded(te_dir, folder, lambda: CLIPTextModel.from_pretrained(
        te_dir, local_files_only=True, dtype=dtype, **te_kw))
    tokenizer = _guarded(tok_dir, folder, lambda: AutoTokenizer.from_pretrained(tok_dir, local_files_only=True))
    vae = None
    if vae_dir.is_dir():
        from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

        vae_kw = _component_kwargs(vae_dir, folder, dtype)
        vae = _guarded(vae_dir, folder, lambda: AutoencoderKL.from_pretrained(vae_dir, **kw, **vae_kw))
    return DiffusersDenoiser(unet, scheduler, text_encoder, tokenizer, vae, device=device, dtype=dtype)


def _env_on(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def lean_enabled() -> bool:
    """Whether models that fit :mod:`sjc_engine.denoisers.lean` load through it (``SJC_LEAN_MODELS=0``: never)."""
    return _env_on(LEAN_ENV)


def lean_unsupported(folder: Path) -> str | None:
    """Why the model folder ``folder`` does not load through :mod:`sjc_engine.denoisers.lean`, or ``None``.

    It must be a text-conditioned pixel model (``unet/`` ``UNet2DConditionModel``, ``text_encoder/``
    ``CLIPTextModel``, ``tokenizer/`` with a ``tokenizer.json``, no ``vae/``) whose configs the lean modules
    implement, with safetensors weights. Configs that cannot be read count as unsupported (the diffusers path
    then reports them).
    """
    from sjc_engine.denoisers import lean

    unet_dir, te_dir, tok_dir = folder / "unet", folder / "text_encoder", folder / "tokenizer"
    if (folder / "vae").exists():
        return "a latent model (vae/)"
    if not (unet_dir.is_dir() and te_dir.is_dir() and tok_dir.is_dir()):
        return "not a unet/ + text_encoder/ + tokenizer/ folder"
    try:
        cfgs = [json.loads(f.read_text()) for f in (unet_dir / "config.json", te_dir / "config.json")]
        reason = (lean.unet_config_unsupported(cfgs[0]) or lean.clip_config_unsupported(cfgs[1])
                  or lean.tokenizer_unsupported(tok_dir))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
        return f"unreadable config ({type(e).__name__})"
    return reason


def _lean_files(folder: Path, root: Path, dtype: torch.dtype) -> list[Path] | None:
    """The checked safetensors files of a component folder, or ``None`` when it holds ``.bin`` weights."""
    variant = pick_variant(folder, prefer_half=dtype != torch.float32, root=root)
    files = files_to_load(folder, variant)
    for f in files:
        check_weights_file(f, root=root)
    return files if files and all(f.suffix == ".safetensors" for f in files) else None


def _load_lean(folder: Path, unet_dir: Path, unet_cfg: dict[str, Any], sched_cfg: dict[str, Any],
               device: torch.device | str, dtype: torch.dtype) -> DiffusersDenoiser | None:
    """The model through :mod:`sjc_engine.denoisers.lean` (no diffusers or transformers import), or ``None``
    when it does not fit (see :func:`lean_unsupported`)."""
    from sjc_engine.denoisers import lean

    if unet_dir != folder / "unet" or lean_unsupported(folder) or lean.schedule_unsupported(sched_cfg):
        return None
    te_dir, tok_dir = folder / "text_encoder", folder / "tokenizer"
    unet_files, te_files = _lean_files(unet_dir, folder, dtype), _lean_files(te_dir, folder, dtype)
    if unet_files is None or te_files is None:
        return None

    def build_unet() -> torch.nn.Module:
        unet = lean.LeanUNet(unet_cfg)
        lean.load_state(unet, unet_files)
        return unet

    def build_text() -> torch.nn.Module:
        te = lean.LeanCLIPText(json.loads((te_dir / "config.json").read_text()))
        lean.load_state(te, te_files, strip_prefix="text_model.")
        return te

    unet = _guarded(unet_dir, folder, build_unet)
    unet.trace = _env_on(LEAN_TRACE_ENV)
    text_encoder = _guarded(te_dir, folder, build_text)
    tokenizer = _guarded(tok_dir, folder, lambda: lean.LeanTokenizer(tok_dir))
    return DiffusersDenoiser(unet, lean.Schedule(sched_cfg), text_encoder, tokenizer, None, device=device, dtype=dtype)


def single_file_config_dir(path: Path) -> Path | None:
    """The local diffusers config folder for a single checkpoint file, or ``None``."""
    for cand in (path.with_suffix(""), path.parent):
        if (cand / "model_index.json").is_file():
            return cand
    return None


def _load_single_file(path: Path, device: torch.device | str, dtype: torch.dtype) -> DiffusersDenoiser:
    root = path.parent
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ModelLoadError(path, "a single-file model must be .safetensors or .ckpt", root=root)
    check_weights_file(path, root=root)
    config = single_file_config_dir(path)
    if config is None:
        raise ModelLoadError(
            path.with_suffix(""), f"no local diffusers config folder for {path.name} (model_index.json and the "
            f"component configs, in {path.with_suffix('').name}/ or beside the file); nothing is downloaded",
            root=root,
        )
    from diffusers import StableDiffusionPipeline

    pipe = _guarded(path, root, lambda: StableDiffusionPipeline.from_single_file(
        str(path), config=str(config), local_files_only=True, torch_dtype=dtype,
        safety_checker=None, requires_safety_checker=False,
    ))
    scheduler = _scheduler(config, root)
    return DiffusersDenoiser(pipe.unet, scheduler, pipe.text_encoder, pipe.tokenizer, pipe.vae, device=device, dtype=dtype)
