"""Weights files of a diffusers/transformers component folder: which variant to load, and a cheap integrity check.

Downloads often hold only half-precision files, saved with ``variant="fp16"``:
``unet/diffusion_pytorch_model.fp16.safetensors``, ``text_encoder/model.fp16.safetensors`` (or ``.bin``, or
shards with an ``*.index.fp16.json``). :func:`pick_variant` finds what a folder holds so the loader can pass
``variant=`` to ``from_pretrained``.

:func:`check_weights_file` reads only headers: a safetensors file must be as long as its header says, a
PyTorch ``.bin``/``.ckpt`` must be a zip archive with a pickle inside (or a legacy pickle). So a truncated or
corrupted file is a :class:`~sjc_engine.denoisers.errors.ModelLoadError` naming it before any library sees it.
Imports no torch.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path

from sjc_engine.denoisers.errors import ModelLoadError, one_line

HALF_VARIANT = "fp16"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
PICKLE_PROTOCOL_2 = b"\x80\x02"  # a legacy (pre-zip) torch.save file starts with a pickle of protocol 2
_SHARD = r"(?:-\d{5}-of-\d{5})?"
_WEIGHTS = re.compile(
    rf"^(?:diffusion_pytorch_model|pytorch_model|model){_SHARD}(?:\.(?P<variant>[A-Za-z0-9_]+))?{_SHARD}"
    r"\.(?:safetensors|bin)$"
)
_INDEX = re.compile(
    r"^(?:diffusion_pytorch_model|pytorch_model|model)\.(?:safetensors|bin)\.index(?:\.(?P<variant>[A-Za-z0-9_]+))?\.json$"
)


def weight_files(folder: Path) -> dict[str | None, list[Path]]:
    """The weights files (and shard indexes) of a component folder, grouped by variant (``None``: no variant)."""
    found: dict[str | None, list[Path]] = {}
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = _WEIGHTS.match(f.name) or _INDEX.match(f.name)
        if m and f.is_file():
            found.setdefault(m.group("variant"), []).append(f)
    return found


def pick_variant(folder: Path, prefer_half: bool = False, root: Path | None = None) -> str | None:
    """The ``variant=`` to load ``folder`` with.

    Args:
        folder: a component folder (``unet/``, ``vae/``, ``text_encoder/``).
        prefer_half: take the ``fp16`` files when a folder has both those and full-precision ones (a model
            that will run in half precision anyway loads half the bytes).
        root: the model folder, for error messages.

    Returns ``None`` for the plain files, else the variant (``"fp16"``, or the only variant present).
    Raises :class:`ModelLoadError` when the folder has no weights at all, or several variants and no plain files.
    """
    files = weight_files(folder)
    variants = sorted(v for v in files if v is not None)
    if None in files and not (prefer_half and HALF_VARIANT in files):
        return None
    if HALF_VARIANT in files:
        return HALF_VARIANT
    if len(variants) == 1:
        return variants[0]
    if not variants:
        raise ModelLoadError(
            folder, "no weights file (expected e.g. diffusion_pytorch_model.safetensors or model.safetensors, "
            "optionally with an .fp16 variant)", root=root,
        )
    raise ModelLoadError(folder, f"several weight variants {variants} and no plain weights file: cannot choose", root=root)


def files_to_load(folder: Path, variant: str | None) -> list[Path]:
    """The weights files ``from_pretrained(variant=variant)`` reads: safetensors when present, else .bin,
    and the shards an index lists."""
    files = weight_files(folder).get(variant, [])
    for suffix in (".safetensors", ".bin"):
        chosen = [f for f in files if f.suffix == suffix or f.name.endswith(f"{suffix}.index.json")
                  or (variant and f.name.endswith(f"{suffix}.index.{variant}.json"))]
        indexes = [f for f in chosen if f.suffix == ".json"]
        if indexes:  # sharded: the shards the index lists (a missing one is then reported by name)
            return sorted({shard for index in indexes for shard in _shards(index)})
        if chosen:
            return chosen
    return []


def _shards(index: Path) -> list[Path]:
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelLoadError(index, "corrupted shard index (not JSON with a weight_map)", detail=str(e)) from e
    return [index.parent / n for n in names]


def check_weights_file(path: Path, root: Path | None = None) -> None:
    """Raise :class:`ModelLoadError` naming ``path`` if it is missing, truncated or not a weights file.

    Reads headers only (``.safetensors``: the JSON header and the data length it promises; ``.bin``/``.ckpt``/
    ``.pt``: the zip directory, or a legacy pickle's first bytes).
    """
    if not path.is_file():
        raise ModelLoadError(path, "file missing", root=root)
    if path.suffix == ".safetensors":
        _check_safetensors(path, root)
    elif path.suffix in (".bin", ".ckpt", ".pt", ".pth"):
        _check_torch_file(path, root)


def _check_safetensors(path: Path, root: Path | None) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelLoadError(path, f"truncated safetensors file ({size} bytes, shorter than its header)", root=root)
        n = struct.unpack("<Q", head)[0]
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise ModelLoadError(
                path, f"truncated or corrupted safetensors file (header of {n} bytes announced, file has {size})", root=root
            )
        try:
            header = json.loads(fh.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise ModelLoadError(path, "corrupted safetensors file (its header is not valid)", root=root,
                                 detail=one_line(str(e))) from e
    if 8 + n + end > size:
        raise ModelLoadError(
            path, f"truncated safetensors file ({size} bytes; its header needs {8 + n + end})", root=root
        )


def _check_torch_file(path: Path, root: Path | None) -> None:
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelLoadError(path, "corrupted PyTorch weights file (bad zip archive)", root=root, detail=str(e)) from e
        if not any(n.endswith(".pkl") for n in names):
            raise ModelLoadError(path, "not a PyTorch weights file (a zip archive without a pickle)", root=root)
        return
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic != PICKLE_PROTOCOL_2:
        raise ModelLoadError(
            path, "truncated or corrupted PyTorch weights file (neither a complete zip archive nor a legacy pickle)",
            root=root,
        )
