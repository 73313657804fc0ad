"""From a validated ``JobCreate`` body to the job's effective parameters, or a 422 naming the field.

Checks, in order: the deployment's limits (prompt length, ``max_steps``), the model (by name only:
the embedded model or a folder under ``Settings.model_dirs``; never an arbitrary server path), the
prompt against the model's vocabulary (``ModelInfo.check_prompt``), then the full ``SJCConfig``
built the way the worker builds it. ``None`` fields are filled with what will actually run, and a
missing seed is drawn here, so ``GET /v1/jobs/{id}`` shows the effective parameters.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

from api.problems import field_error
from sjc_engine.catalog import ModelInfo, ModelNotFoundError, PromptError, resolve_model
from sjc_engine.config import SJCConfig
from sjc_service.schemas import JobCreate
from sjc_service.settings import Settings

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SEED_MAX = 2**31 - 1


def request_hash(body: JobCreate) -> str:
    """SHA-256 of the request as sent (fields set by the client only), for ``Idempotency-Key`` checks."""
    canonical = json.dumps(body.model_dump(mode="json", exclude_unset=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_model(name: str, settings: Settings) -> ModelInfo:
    """The model called ``name``, looked up only where the service keeps models (never a server path)."""
    if not MODEL_NAME.match(name) or name in (".", ".."):
        raise field_error("model", f"{name!r} is not a model name (letters, digits, '.', '_', '-'; no paths)")
    try:
        return resolve_model(name, settings.model_dirs, allow_paths=False)
    except ModelNotFoundError as exc:
        raise field_error("model", f"{exc} See GET /v1/models.") from None


def effective_params(body: JobCreate, settings: Settings) -> dict[str, Any]:
    """Validate ``body`` against the deployment and its model; return the parameters to store."""
    prompt = " ".join(body.prompt.split())
    if not prompt:
        raise field_error("prompt", "the prompt is empty")
    if len(prompt) > settings.max_prompt_chars:
        raise field_error("prompt", f"the prompt is longer than {settings.max_prompt_chars} characters")
    info = find_model(body.model or settings.default_model, settings)
    try:
        prompt = info.check_prompt(prompt)
    except PromptError as exc:
        raise field_error("prompt", str(exc)) from None
    if not body.outputs:
        raise field_error("outputs", "ask for at least one output")
    if "mesh" in body.outputs and not body.mesh_formats:
        raise field_error("mesh_formats", "the 'mesh' output needs at least one mesh format")
    params = body.model_dump(mode="json")
    params.update(prompt=prompt, model=info.name, outputs=sorted(set(body.outputs)),
                  mesh_formats=sorted(set(body.mesh_formats)))
    if params["seed"] is None:
        params["seed"] = secrets.randbelow(SEED_MAX + 1)
    config_keys = [k for k in params if k not in ("outputs", "mesh_formats")]
    try:
        config = SJCConfig.for_model(info.defaults, **{k: params[k] for k in config_keys})
    except ValueError as exc:
        found = re.search(r"SJCConfig\.(\w+)", str(exc))
        raise field_error(found.group(1) if found else "body", str(exc)) from None
    for key in config_keys:
        if params[key] is None:
            params[key] = getattr(config, key)
    if body.steps is None:  # the model's recommendation, within this deployment's limit
        params["steps"] = min(params["steps"], settings.max_steps)
    elif body.steps > settings.max_steps:
        raise field_error("steps", f"must be at most {settings.max_steps} on this service (got {body.steps})")
    return params
