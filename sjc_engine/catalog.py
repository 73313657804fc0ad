"""Where models live and what they accept; imports no torch, so the service API can use it.

A model is named ``"embedded"`` (the small model shipped inside this package), by a folder name under
one of the configured model directories, or by a local path: a diffusers folder or a single
``.safetensors``/``.ckpt`` file. Nothing is ever downloaded: a missing model is a
:class:`ModelNotFoundError` that names every place looked in.

A model folder may hold ``sjc_model.json`` with its metadata::

    {"name": "embedded", "kind": "pixel", "description": "...",
     "vocabulary": {"colors": [...], "shapes": [...]},
     "defaults": {"render_size": 32, "grid_size": 64, ...},   # SJCConfig settings it recommends
     "baked_light": {"direction": [0.35, 1.0, 0.45]}}          # the light its training images were shaded by
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EMBEDDED_NAME = "embedded"
EMBEDDED_DIR = Path(__file__).resolve().parent / "models" / "embedded"
META_FILE = "sjc_model.json"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
ARTICLES = frozenset({"a", "an", "the"})


def normalize_prompt(prompt: str) -> str:
    """The prompt with runs of whitespace collapsed to one space and the ends trimmed."""
    return " ".join(prompt.split())


class ModelNotFoundError(FileNotFoundError):
    """No model under that name or path; the message lists every place looked in."""


class PromptError(ValueError):
    """The prompt is outside what the model can draw; the message lists what it knows."""


@dataclass(frozen=True)
class ModelInfo:
    """What the engine and the service need to know about a model before loading it.

    Attributes:
        name: the name it was asked for by (``"embedded"``, a folder name, or the path given).
        path: the diffusers folder or single checkpoint file.
        kind: ``"latent"`` (renders into a VAE latent space) or ``"pixel"``.
        vocabulary: for narrow models, ``{"colors": [...], "shapes": [...]}``; ``None`` accepts any prompt.
        defaults: SJCConfig settings the model recommends (applied under the caller's overrides).
        description: one line for ``GET /v1/models``.
        torch_threads: at most this many torch intra-op threads on a CPU (``torch_threads`` in
            ``sjc_model.json``; None: as many as the run has), see :mod:`sjc_engine.threads`.
        baked_light: unit direction (world frame, +y up) towards the light that shaded the model's training
            images (``baked_light.direction`` in ``sjc_model.json``; None: not known); the mesh export takes that
            shading out of the mesh's colours (:mod:`sjc_engine.export.delight`).
    """

    name: str
    path: Path
    kind: Literal["latent", "pixel"]
    vocabulary: dict[str, list[str]] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    torch_threads: int | None = None
    baked_light: tuple[float, float, float] | None = None

    def check_prompt(self, prompt: str) -> str:
        """Return the prompt as the model takes it, or raise :class:`PromptError` if it cannot draw it.

        A model with a vocabulary rewrites the prompt to its canonical ``"a <colour> <shape>"``.
        """
        text = normalize_prompt(prompt)
        if not text:
            raise PromptError("the prompt is empty")
        if self.vocabulary is None:
            return text
        colors, shapes = self.vocabulary["colors"], self.vocabulary["shapes"]
        words = re.findall(r"[a-z]+", text.lower())
        unknown = [w for w in words if w not in ARTICLES and w not in colors and w not in shapes]
        found_colors = [w for w in words if w in colors]
        found_shapes = [w for w in words if w in shapes]
        if unknown or len(found_colors) != 1 or len(found_shapes) != 1:
            why = f"unknown words {unknown}" if unknown else "it needs exactly one colour and one shape"
            raise PromptError(
                f"model {self.name!r} cannot draw {prompt!r} ({why}); it knows prompts like "
                f"'a <colour> <shape>' with colours {colors} and shapes {shapes}"
            )
        return f"a {found_colors[0]} {found_shapes[0]}"


def _unet_size_defaults(folder: Path) -> dict[str, Any]:
    """``{"render_size": n}`` from the UNet config's ``sample_size`` (SD 1.x: 64, SD 2.x 768: 96), so the field
    renders at the size the UNet expects; ``{}`` when unknown (the loader reports broken files)."""
    cfg = folder / "unet" / "config.json"
    try:
        size = json.loads((cfg if cfg.is_file() else folder / "config.json").read_text()).get("sample_size")
    except (OSError, ValueError, AttributeError):
        return {}
    size = size[0] if isinstance(size, list) and size else size
    return {"render_size": size} if isinstance(size, int) and 8 <= size <= 512 else {}


def _info_from_path(name: str, path: Path) -> ModelInfo:
    if path.is_file():
        config_dir = next((c for c in (path.with_suffix(""), path.parent) if (c / "model_index.json").is_file()), path.parent)
        return ModelInfo(name=name, path=path, kind="latent", defaults=_unet_size_defaults(config_dir),
                         description=f"single-file checkpoint {path.name}")
    meta_path = path / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return ModelInfo(
            name=name,
            path=path,
            kind=meta.get("kind", "pixel"),
            vocabulary=meta.get("vocabulary"),
            defaults={**_unet_size_defaults(path), **meta.get("defaults", {})},
            description=meta.get("description", ""),
            torch_threads=_positive_int(meta.get("torch_threads"), meta_path, "torch_threads"),
            baked_light=_light_direction(meta.get("baked_light"), meta_path),
        )
    index = path / "model_index.json"
    if not index.is_file() and not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} is not a diffusers model folder (no model_index.json or config.json)")
    kind: Literal["latent", "pixel"] = "latent" if (path / "vae").is_dir() else "pixel"
    return ModelInfo(name=name, path=path, kind=kind, defaults=_unet_size_defaults(path),
                     description=f"diffusers model at {path}")


def _light_direction(value: Any, path: Path) -> tuple[float, float, float] | None:
    """``baked_light.direction`` as a unit vector (:func:`sjc_engine.export.delight.unit_direction`), None when
    absent, :class:`ModelLoadError` naming ``path`` when malformed."""
    if value is None:
        return None
    from sjc_engine.export.delight import unit_direction  # numpy only

    d = value.get("direction") if isinstance(value, dict) else None
    try:
        if not isinstance(d, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in d):
            raise ValueError("not a list of numbers")
        return tuple(float(x) for x in unit_direction(d))  # type: ignore[return-value]
    except ValueError:
        from sjc_engine.denoisers.errors import ModelLoadError

        raise ModelLoadError(path, f'baked_light must be {{"direction": [x, y, z]}} (finite, not all 0), got {value!r}',
                             root=path.parent) from None


def _positive_int(value: Any, path: Path, key: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        from sjc_engine.denoisers.errors import ModelLoadError

        raise ModelLoadError(path, f"{key} must be an integer >= 1, got {value!r}", root=path.parent)
    return value


def resolve_model(model: str, model_dirs: Sequence[str | Path] = (), allow_paths: bool = True) -> ModelInfo:
    """Find ``model``: ``"embedded"``, a folder name under one of ``model_dirs``, or a local path.

    With ``allow_paths=False`` (the service: clients name models, never server paths) only the embedded
    model and folders under ``model_dirs`` count.
    """
    looked: list[Path] = []
    if model == EMBEDDED_NAME:
        looked.append(EMBEDDED_DIR)
        if (EMBEDDED_DIR / META_FILE).is_file():
            return _info_from_path(EMBEDDED_NAME, EMBEDDED_DIR)
    else:
        candidates = [Path(d) / model for d in model_dirs] if "/" not in model else []
        if allow_paths:
            candidates.append(Path(model).expanduser())
        for cand in candidates:
            looked.append(cand)
            if cand.is_dir() or (cand.is_file() and cand.suffix in SINGLE_FILE_SUFFIXES):
                return _info_from_path(model, cand.resolve())
    where = ", ".join(str(p) for p in looked) or "nowhere (no model folders are configured)"
    raise ModelNotFoundError(
        f"model {model!r} not found; looked in: {where}. Models load from local files only "
        "(a diffusers folder or a .safetensors/.ckpt file); nothing is downloaded."
    )


def list_models(model_dirs: Sequence[str | Path] = ()) -> list[ModelInfo]:
    """The embedded model (when present) and every model folder under ``model_dirs``."""
    found: list[ModelInfo] = []
    try:
        found.append(resolve_model(EMBEDDED_NAME))
    except ModelNotFoundError:
        pass
    for d in model_dirs:
        root = Path(d)
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            try:
                found.append(_info_from_path(child.name, child.resolve()))
            except ModelNotFoundError:
                continue
    return found
