"""Prompt in, files out: validate, load the model, run SJC, export the results to a folder.

The files (fixed names; the service uploads them under ``jobs/{id}/``):
``field.pt`` (the voxel field with its config), ``turntable.mp4``, ``thumbnail.png``, ``mesh.glb`` / ``mesh.ply`` /
``mesh.obj`` (+ ``mesh.mtl``, ``mesh.png``) / ``mesh.stl`` (see :mod:`sjc_engine.export.asset`),
``previews/step_XXXXXX.png`` and ``config.json``. A run stopped early (cancel) writes
only ``field.pt`` and the previews made so far.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sjc_engine.callbacks import CallbackList, Callbacks, StepReport
from sjc_engine.config import SJCConfig
from sjc_engine.export.formats import MESH_FORMATS
from sjc_engine.run_spec import OUTPUTS, RUNTIME_SETTINGS, limits_for_cli, resolve_run



@dataclass
class GenerateResult:
    """What :func:`generate` wrote.

    Attributes:
        files: file name relative to ``out_dir`` (``"field.pt"``, ``"previews/step_000100.png"``, ...) -> path.
        steps_done: optimiser steps done in all.
        stopped: True when the run was cancelled through ``should_stop``.
        config: the effective settings (normalised prompt included).
        warnings: outputs skipped and why (e.g. no surface at the mesh threshold).
    """

    files: dict[str, Path]
    steps_done: int
    stopped: bool
    config: SJCConfig
    warnings: list[str] = dataclasses.field(default_factory=list)


def build_config(prompt: str, model: str = "embedded", model_dirs: Sequence[str | Path] = (), **overrides: Any) -> SJCConfig:
    """The settings for ``prompt`` on ``model`` through the run contract (:func:`sjc_engine.run_spec.resolve_run`):
    reference defaults < the model's defaults < explicit ``overrides`` (``None``: not given).

    For scripts, notebooks and ``sjc generate``: a local path may name the model, and the seed is
    ``SJCConfig.seed`` (0) unless given, so a run repeats. Raises ``RunSpecError`` naming the field.
    """
    runtime = {k: overrides.pop(k) for k in RUNTIME_SETTINGS if k in overrides}
    if overrides.get("seed") is None:
        overrides["seed"] = SJCConfig.seed
    spec = resolve_run({"prompt": prompt, "model": model, **overrides}, limits_for_cli(model_dirs))
    return spec.config(**runtime)


class PreviewWriter(Callbacks):
    """Saves every preview the loop reports as ``out_dir/previews/step_XXXXXX.png``."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / "previews"
        self.files: dict[str, Path] = {}

    def on_step(self, report: StepReport) -> None:
        if report.preview is None:
            return
        from sjc_engine.export.images import save_png

        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"step_{report.step:06d}.png"
        save_png(report.preview, path)
        self.files[f"previews/{path.name}"] = path


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def generate(
    config: SJCConfig,
    out_dir: Path,
    callbacks: Callbacks | None = None,
    resume: dict[str, Any] | Path | None = None,
    denoiser: Any = None,
    outputs: Collection[str] = OUTPUTS,
    mesh_formats: Collection[str] = MESH_FORMATS,
    model_dirs: Sequence[str | Path] = (),
) -> GenerateResult:
    """Run SJC for ``config`` and export to ``out_dir``.

    Args:
        config: the run's settings, resolved by :func:`sjc_engine.run_spec.resolve_run` (``RunSpec.config``)
            or :func:`build_config`: prompt and model are not checked again here.
        out_dir: the folder to write into (created).
        callbacks: progress, previews, checkpoints, cancel.
        resume: a state dict or the path of one (:func:`sjc_engine.checkpoint.save_checkpoint`).
        denoiser: an already loaded denoiser (else ``config.model`` is loaded).
        outputs: which of ``"checkpoint"``, ``"video"``, ``"mesh"``, ``"previews"`` to write.
        mesh_formats: which of :data:`~sjc_engine.export.formats.MESH_FORMATS` (``"glb"``, ``"ply"``, ``"obj"``, ``"stl"``).
        model_dirs: folders holding named models.
    """
    # 1. load the model (the config was resolved by the run contract: it is taken as it is)
    if denoiser is None:
        from sjc_engine.denoisers.loader import load_denoiser

        denoiser = load_denoiser(config.model, device=config.device, half=config.half, model_dirs=model_dirs)
    if isinstance(resume, (str, Path)):
        from sjc_engine.checkpoint import load_checkpoint

        resume = load_checkpoint(resume)

    # 2. optimise
    from sjc_engine.optimize import run_sjc

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previews = PreviewWriter(out_dir)
    cb = CallbackList(previews if "previews" in outputs else None, callbacks)
    result = run_sjc(config, denoiser, callbacks=cb, resume=resume)
    if not result.stopped:
        cb.on_export(result.step)

    # 3. export
    files: dict[str, Path] = {}
    warnings: list[str] = []
    field = result.field
    if "checkpoint" in outputs:
        path = out_dir / "field.pt"
        field.save(path, extra={"config": config.to_dict(), "step": result.step})
        files["field.pt"] = path
    files.update(previews.files)
    if not result.stopped:
        from sjc_engine.export.asset import export_asset

        exported = export_asset(
            field, config, out_dir, decode=denoiser.decode, is_latent=bool(getattr(denoiser, "is_latent", False)),
            outputs=outputs, mesh_formats=mesh_formats, baked_light=getattr(denoiser, "baked_light", None),
        )
        files.update({_rel(path, out_dir): path for path in exported.files.values()})
        warnings.extend(exported.warnings)
        path = out_dir / "config.json"
        path.write_text(json.dumps({**config.to_dict(), "steps_done": result.step}, indent=2))
        files["config.json"] = path
    return GenerateResult(files=files, steps_done=result.step, stopped=result.stopped, config=config, warnings=warnings)
