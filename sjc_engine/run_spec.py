"""The run contract: a request becomes one resolved :class:`RunSpec`, once, by :func:`resolve_run`.

A request names a prompt, perhaps a model, a seed, outputs and a few settings; everything it leaves out
is filled in here: the model is found in the catalog, the prompt normalised and checked against the
model's vocabulary, a missing seed drawn, the model's recommended settings applied under the request's,
and every setting checked by :class:`SJCConfig`. The result holds every effective setting, so whoever
runs it (the CLI, a service worker) runs it as it is, adding only its own device, precision and
checkpoint settings (:data:`RUNTIME_SETTINGS`) through :meth:`RunSpec.config`.

The service's API resolves a job's spec when the job is created and stores it; the worker rebuilds it
with :meth:`RunSpec.from_dict`, which refuses what the API would refuse (a model path, an unknown output).
Errors are :class:`RunSpecError` with the request ``field`` they concern and a job error ``code``.

Imports no torch and no service framework: the API, the worker and the CLI share it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sjc_engine.catalog import ModelNotFoundError, PromptError, normalize_prompt, resolve_model
from sjc_engine.config import ConfigError, SJCConfig
from sjc_engine.export.formats import MESH_FORMATS

OUTPUTS: tuple[str, ...] = ("checkpoint", "video", "mesh", "previews")
RUNTIME_SETTINGS = ("device", "half", "checkpoint_every")
"""Settings that belong to the machine running the spec, not to the request."""
IDENTITY = ("prompt", "model", "seed")
SEED_MAX = 2**31 - 1
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ErrorCode = Literal["invalid_prompt", "model_not_found", "invalid_params"]


class RunSpecError(ValueError):
    """A request the contract refuses.

    Attributes:
        field: the request field at fault (``"prompt"``, ``"model"``, ``"steps"``, ``"outputs"``, ...).
        code: the job error code (``"invalid_prompt"``, ``"model_not_found"`` or ``"invalid_params"``).
    """

    def __init__(self, field: str, message: str, code: ErrorCode = "invalid_params") -> None:
        super().__init__(message)
        self.field, self.code, self.message = field, code, message


@dataclass(frozen=True)
class RunLimits:
    """Where models are found and how far a request may go.

    Args:
        model_dirs: folders holding model folders (default: none, only the embedded model).
        default_model: the model of a request that names none (default ``"embedded"``).
        allow_paths: accept a local path as the model (default False: names only; the CLI allows paths).
        max_steps: largest ``steps`` a request may ask for; a request without ``steps`` gets the model's
            recommendation capped to it (default ``None``: no limit).
        max_prompt_chars: longest normalised prompt (default ``None``: no limit).
    """

    model_dirs: tuple[str, ...] = ()
    default_model: str = "embedded"
    allow_paths: bool = False
    max_steps: int | None = None
    max_prompt_chars: int | None = None


@dataclass(frozen=True)
class RunSpec:
    """One run, fully resolved.

    Attributes:
        model: the model's name (or, from the CLI only, its local path).
        prompt: the prompt as the model takes it.
        seed: the seed of every random draw of the run.
        settings: every other :class:`SJCConfig` setting, effective values (model defaults applied).
        outputs: which of :data:`OUTPUTS` to write, sorted.
        mesh_formats: which of :data:`~sjc_engine.export.formats.MESH_FORMATS` to write, sorted.
    """

    model: str
    prompt: str
    seed: int
    settings: Mapping[str, Any]
    outputs: tuple[str, ...]
    mesh_formats: tuple[str, ...]

    def config(self, **runtime: Any) -> SJCConfig:
        """The engine's settings, with this machine's :data:`RUNTIME_SETTINGS` (``None``: keep the spec's)."""
        unknown = set(runtime) - set(RUNTIME_SETTINGS)
        if unknown:
            raise RunSpecError(sorted(unknown)[0], f"only {RUNTIME_SETTINGS} may be set at run time, not {sorted(unknown)}")
        chosen = {k: v for k, v in runtime.items() if v is not None}
        return SJCConfig.from_dict({**self.settings, **chosen, "prompt": self.prompt, "model": self.model, "seed": self.seed})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists), for storage."""
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()}
        return {"model": self.model, "prompt": self.prompt, "seed": self.seed, "settings": settings,
                "outputs": list(self.outputs), "mesh_formats": list(self.mesh_formats)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunSpec":
        """A stored spec back, checked again without the catalog: a model name (never a path), known
        outputs and formats, valid settings. Raises :class:`RunSpecError`."""
        missing = {"model", "prompt", "seed", "settings", "outputs", "mesh_formats"} - set(data)
        if missing:
            raise RunSpecError(sorted(missing)[0], f"the run spec lacks {sorted(missing)}")
        _check_model_name(str(data["model"]))
        spec = cls(model=str(data["model"]), prompt=str(data["prompt"]), seed=_seed(data["seed"]),
                   settings=dict(data["settings"]), outputs=_outputs(data["outputs"]),
                   mesh_formats=_mesh_formats(data["mesh_formats"], data["outputs"]))
        _checked_config(spec.settings, spec.prompt, spec.model, spec.seed)
        return spec


def resolve_run(request: Mapping[str, Any], limits: RunLimits = RunLimits()) -> RunSpec:
    """Turn a request into its :class:`RunSpec`, or raise :class:`RunSpecError` naming the field.

    Args:
        request: ``prompt`` (required), ``model``, ``seed``, ``outputs``, ``mesh_formats`` and any
            :class:`SJCConfig` setting but the runtime ones; ``None`` (or absent) means "the default":
            the model's recommendation, then the reference's; a missing seed is drawn.
        limits: the catalog's folders and the caller's limits.
    """
    request = dict(request)
    for name in RUNTIME_SETTINGS:
        if request.get(name) is not None:
            raise RunSpecError(name, f"{name!r} belongs to the machine that runs the job, not to the request")
    # 1. the prompt, normalised once
    raw_prompt = request.pop("prompt", None)
    if not isinstance(raw_prompt, str) or not normalize_prompt(raw_prompt):
        raise RunSpecError("prompt", "the prompt is empty", "invalid_prompt")
    prompt = normalize_prompt(raw_prompt)
    if limits.max_prompt_chars is not None and len(prompt) > limits.max_prompt_chars:
        raise RunSpecError("prompt", f"the prompt is longer than {limits.max_prompt_chars} characters", "invalid_prompt")
    # 2. the model, looked up once; then the prompt against its vocabulary
    model = request.pop("model", None) or limits.default_model
    if not limits.allow_paths:
        _check_model_name(model)
    try:
        info = resolve_model(model, limits.model_dirs, allow_paths=limits.allow_paths)
        prompt = info.check_prompt(prompt)
    except ModelNotFoundError as exc:
        raise RunSpecError("model", str(exc), "model_not_found") from None
    except PromptError as exc:
        raise RunSpecError("prompt", str(exc), "invalid_prompt") from None
    # 3. outputs and the seed, drawn once
    outputs = _outputs(_or_default(request.pop("outputs", None), OUTPUTS))
    mesh_formats = _mesh_formats(_or_default(request.pop("mesh_formats", None), MESH_FORMATS), outputs)
    seed = request.pop("seed", None)
    seed = secrets.randbelow(SEED_MAX + 1) if seed is None else _seed(seed)
    # 4. every setting: reference < model < request, each checked, steps within the caller's limit
    given = {k: v for k, v in request.items() if v is not None}
    if limits.max_steps is not None and given.get("steps", 0) > limits.max_steps:
        raise RunSpecError("steps", f"must be at most {limits.max_steps} on this service (got {given['steps']})")
    merged = {k: v for k, v in info.defaults.items() if k not in IDENTITY}
    merged.update(given)
    if limits.max_steps is not None and "steps" not in given:  # the recommendation, within the limit
        merged["steps"] = min(int(merged.get("steps", SJCConfig.steps)), limits.max_steps)
    config = _checked_config(merged, prompt, model, seed)
    settings = {k: v for k, v in config.to_dict().items() if k not in IDENTITY}
    return RunSpec(model=model, prompt=prompt, seed=seed, settings=settings, outputs=outputs, mesh_formats=mesh_formats)


def limits_for_cli(model_dirs: Sequence[str | Path] = ()) -> RunLimits:
    """The CLI's limits: any local path may be the model, no caps."""
    return RunLimits(model_dirs=tuple(str(d) for d in model_dirs), allow_paths=True)


def _or_default(values: Collection[str] | None, default: Collection[str]) -> Collection[str]:
    return default if values is None else values


def _checked_config(settings: Mapping[str, Any], prompt: str, model: str, seed: int) -> SJCConfig:
    try:
        return SJCConfig.from_dict({**settings, "prompt": prompt, "model": model, "seed": seed})
    except ConfigError as exc:
        raise RunSpecError(exc.field, str(exc)) from None
    except TypeError as exc:  # a value of the wrong type, e.g. a string where a number belongs
        raise RunSpecError("settings", f"a setting has the wrong type: {exc}") from None


def _check_model_name(name: str) -> None:
    if not MODEL_NAME.match(name) or name in (".", ".."):
        raise RunSpecError("model", f"{name!r} is not a model name (letters, digits, '.', '_', '-'; no paths)",
                           "model_not_found")


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise RunSpecError("seed", f"the seed must be an integer in [0, {SEED_MAX}] (got {value!r})")
    return value


def _outputs(values: Collection[str]) -> tuple[str, ...]:
    chosen = set(values)
    if not chosen:
        raise RunSpecError("outputs", "ask for at least one output")
    unknown = chosen - set(OUTPUTS)
    if unknown:
        raise RunSpecError("outputs", f"unknown outputs {sorted(unknown)}; choose from {list(OUTPUTS)}")
    return tuple(sorted(chosen))


def _mesh_formats(values: Collection[str], outputs: Collection[str]) -> tuple[str, ...]:
    chosen = set(values)
    unknown = chosen - set(MESH_FORMATS)
    if unknown:
        raise RunSpecError("mesh_formats", f"unknown mesh formats {sorted(unknown)}; choose from {list(MESH_FORMATS)}")
    if "mesh" in outputs and not chosen:
        raise RunSpecError("mesh_formats", "the 'mesh' output needs at least one mesh format")
    return tuple(sorted(chosen))


