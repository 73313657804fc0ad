"""From a validated ``JobCreate`` body to the job's resolved run spec, or a 422 naming the field.

The run contract (:func:`sjc_engine.run_spec.resolve_run`) does every check once: the deployment's
limits, the model (by name only), the prompt against the model's vocabulary, every setting. The API
stores the spec it returns; the worker runs it as stored.
"""

from __future__ import annotations

import hashlib
import json

from api.problems import field_error
from sjc_engine.run_spec import RunSpec, RunSpecError, resolve_run
from sjc_service.schemas import JobCreate
from sjc_service.settings import Settings

# JobCreate fields that are about delivery, not about the run
NOT_RUN_FIELDS: frozenset[str] = frozenset({"webhook_url", "webhook_events"})


def request_hash(body: JobCreate) -> str:
    """SHA-256 of the request as sent (fields set by the client only), for ``Idempotency-Key`` checks."""
    canonical = json.dumps(body.model_dump(mode="json", exclude_unset=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def resolve_job(body: JobCreate, settings: Settings) -> RunSpec:
    """The run ``body`` asks for on this deployment; a 422 problem naming the field when it is refused."""
    request = body.model_dump(exclude=set(NOT_RUN_FIELDS))
    try:
        return resolve_run(request, settings.run_limits())
    except RunSpecError as exc:
        detail = f"{exc.message} See GET /v1/models." if exc.code == "model_not_found" else exc.message
        raise field_error(exc.field, detail) from None
