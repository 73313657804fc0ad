"""The service's data shapes (pydantic): what clients send, what a job record holds in Redis.

Shared by api/ (request validation) and worker/ (reads the run spec, writes results); imports no
torch. What clients get back is :mod:`sjc_service.views`, never the record itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sjc_engine.export.formats import MESH_FORMATS
from sjc_engine.run_spec import OUTPUTS
from sjc_service.lifecycle import ACTIVE, TERMINAL, JobStatus, Stage
from sjc_service.validation import check_prompt_text
from sjc_service.webhooks import WEBHOOK_EVENTS, WebhookEvent

OutputKind = Literal[OUTPUTS]  # type: ignore[valid-type]
MeshFormat = Literal[MESH_FORMATS]  # type: ignore[valid-type]
ALL_OUTPUTS: list[str] = list(OUTPUTS)
ALL_MESH_FORMATS: list[str] = list(MESH_FORMATS)
__all__ = ["ACTIVE", "TERMINAL", "JobStatus", "Stage", "JobCreate", "JobError", "Artifact", "JobRecord"]


class JobCreate(BaseModel):
    """Body of ``POST /v1/jobs``. ``None`` means "the model's recommended value".

    Every bound here is a hard ceiling; the API applies the deployment's tighter limits
    (``Settings.max_steps``, ``Settings.max_prompt_chars``) on top. Types are strict: ``"steps": true``
    or ``"steps": "5"`` is refused, not converted. The characters a prompt may hold are listed in
    :mod:`sjc_service.validation` (no control or format characters, no emoji).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=1000, description=(
        "text prompt, e.g. 'a red sphere': letters, marks, digits, punctuation, math/currency/modifier "
        "symbols and spaces; no control or format characters (NUL, U+200B, U+202E), no emoji"))
    model: str | None = Field(None, min_length=1, max_length=200, description="model name; None: the default")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="None: the service draws one and records it")
    steps: int | None = Field(None, ge=1, le=100_000)
    guidance_scale: float | None = Field(None, ge=0, le=1000)
    grid_size: int | None = Field(None, ge=8, le=256)
    render_size: int | None = Field(None, ge=16, le=512)
    lr: float | None = Field(None, gt=0, le=10)
    n_noise: int | None = Field(None, ge=1, le=16)
    views: int | None = Field(None, ge=1, le=16, description="views rendered and scored per step")
    sigma_schedule: Literal["random", "annealed"] | None = None
    emptiness_weight: float | None = Field(None, ge=0, le=1e7)
    mesh_threshold: float | None = Field(None, gt=0, le=1000, description="density of the mesh surface")
    video_frames: int | None = Field(None, ge=1, le=360)
    preview_every: int | None = Field(None, ge=0, le=100_000)
    target_faces: int | None = Field(None, ge=100, le=500_000, description="triangles of the exported mesh")
    texture_size: int | None = Field(None, ge=64, le=4096, description="side of the mesh's colour texture, pixels")
    outputs: list[OutputKind] = Field(default_factory=lambda: list(ALL_OUTPUTS), max_length=len(OUTPUTS))
    mesh_formats: list[MeshFormat] = Field(default_factory=lambda: list(ALL_MESH_FORMATS),
                                           max_length=len(MESH_FORMATS))

    webhook_url: str | None = Field(None, min_length=8, max_length=2000, description=(
        "http(s) URL that gets signed POSTs (Standard Webhooks) for the events of webhook_events; "
        "see GET /v1/webhook-secret"))
    webhook_events: list[WebhookEvent] = Field(default_factory=lambda: list(WEBHOOK_EVENTS), min_length=1,
                                               max_length=len(WEBHOOK_EVENTS),
                                               description="'started' and/or 'completed' (default both)")

    @field_validator("prompt")
    @classmethod
    def _prompt_chars(cls, value: str) -> str:
        return check_prompt_text(value)


class JobError(BaseModel):
    """Why a job failed: a stable machine-readable ``code`` and a human ``message``.

    Codes: ``invalid_prompt``, ``model_not_found``, ``invalid_params`` (the run spec was refused),
    ``model_load_error`` (the model's files are there but broken), ``engine_error``, ``time_limit``,
    ``too_many_attempts``.
    """

    code: str
    message: str


class Artifact(BaseModel):
    """One file a job produced, under ``jobs/{id}/`` in the object store."""

    name: str = Field(description="path relative to the job's folder, e.g. 'mesh.glb'")
    key: str = Field(description="object key, e.g. 'jobs/{id}/mesh.glb'")
    content_type: str
    size: int
    sha256: str | None = None
    url: str | None = Field(None, description="download link (presigned or signed), filled by the API")


class JobRecord(BaseModel):
    """A job as stored in Redis (clients see :class:`sjc_service.views.JobView`).

    Attributes:
        owner: the API key owner who created it.
        spec: the resolved run (:meth:`sjc_engine.run_spec.RunSpec.to_dict`), made once by the API.
        stage: finer than status (:class:`~sjc_service.lifecycle.Stage`).
        progress: 0-100.
        step, total_steps: optimiser steps done and planned.
        attempt: how many times a worker took the job (1 on the first run).
        resumed_from_step: the step the latest attempt resumed from (``None``: started fresh).
        eta_s: estimated seconds to the end of the optimisation.
        cancel_requested: a cancel was asked for (a running job stops at its next check).
    """

    id: str
    owner: str
    status: JobStatus = JobStatus.queued
    stage: Stage = Stage.queued
    progress: float = Field(0.0, ge=0, le=100)
    step: int = 0
    total_steps: int = 0
    attempt: int = 0
    resumed_from_step: int | None = None
    eta_s: float | None = None
    error: JobError | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    artifacts: list[Artifact] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list, description="outputs skipped and why (e.g. no mesh surface)")
    cancel_requested: bool = False

    @field_validator("stage", mode="before")
    @classmethod
    def _legacy_stage(cls, value: Any) -> Any:
        """Records written before the Stage enum named a succeeded job's stage ``"succeeded"``."""
        return Stage.done if value == "succeeded" else value
