"""What clients see of a job: :class:`JobView`, made from the stored record by :func:`job_view`.

The record's internals stay inside: its owner, its run spec's engine-only settings and its
``cancel_requested`` flag never reach a response or an event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from sjc_service.lifecycle import JobStatus, Stage
from sjc_service.schemas import Artifact, JobCreate, JobError, JobRecord

IDENTITY = ("prompt", "model", "seed", "outputs", "mesh_formats")


class JobView(BaseModel):
    """A job as ``GET /v1/jobs/{id}``, its ``done`` event and webhooks show it.

    Attributes:
        params: the effective value of every request field (the model's defaults and the drawn
            seed filled in): send them back as a request to run the same job again.
        stage: finer than status: queued, requeued, loading_model, optimizing, exporting, uploading,
            done, failed, canceled; ``requeueing`` while a dead worker's job waits for its requeue.
        progress: 0-100; ``step``, ``total_steps``: optimiser steps done (never going back) and planned.
        attempt: how many times a worker took the job (1 on the first run).
        resumed_from_step: the step the latest attempt resumed from (``None``: started fresh).
        eta_s: estimated seconds to the end of the optimisation.
    """

    id: str
    status: JobStatus
    stage: Stage
    progress: float
    step: int
    total_steps: int
    attempt: int
    resumed_from_step: int | None = None
    eta_s: float | None = None
    error: JobError | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    artifacts: list[Artifact] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list, description="outputs skipped and why (e.g. no mesh surface)")


def public_params(spec: dict[str, Any]) -> dict[str, Any]:
    """The request fields of a stored run spec, with their effective values."""
    if not spec:
        return {}
    settings = spec.get("settings", {})
    params = {k: spec[k] for k in IDENTITY if k in spec}
    for name in JobCreate.model_fields:
        if name not in params and name in settings:
            params[name] = settings[name]
    return params


def job_view(rec: JobRecord, **changes: Any) -> JobView:
    """The public view of ``rec`` (``changes`` override fields, e.g. the stage shown)."""
    data = rec.model_dump(exclude={"owner", "spec", "cancel_requested"})
    return JobView(**{**data, "params": public_params(rec.spec), **changes})
