"""What the API returns for a job: its public view plus its queue position and links."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sjc_service.jobs import JobStore
from sjc_service.lifecycle import JobStatus, Stage
from sjc_service.schemas import JobRecord
from sjc_service.views import JobView, job_view


class JobOut(JobView):
    """A job as ``GET /v1/jobs/{id}`` shows it.

    Attributes:
        queue_position: jobs ahead of this one in the queue (0: next); ``None`` unless queued.
        links: ``self``, ``events`` (SSE), ``artifacts``, ``cancel`` and ``webhook_deliveries`` URLs (paths).
    """

    queue_position: int | None = None
    links: dict[str, str] = Field(default_factory=dict)


class JobPage(BaseModel):
    """One page of ``GET /v1/jobs``, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[JobOut]
    next_cursor: str | None = None


def job_links(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "events": base + "/events", "artifacts": base + "/artifacts", "cancel": base + "/cancel",
            "webhook_deliveries": base + "/webhook-deliveries"}


def to_view(record: JobRecord, jobs: JobStore) -> JobOut:
    """The record as clients see it, with its live queue position (one Redis call when queued).

    A running job whose worker stopped renewing its lease shows as ``queued`` / ``requeueing`` (no
    ETA) until a reaper requeues it: its worker is gone, whatever step it last reported.
    """
    changes: dict[str, object] = {}
    position = None
    if record.status == JobStatus.queued:
        position = jobs.indexes.queue_position(record.id)
    elif record.status == JobStatus.running and not jobs.leases.alive(record.id):
        changes = {"status": JobStatus.queued, "stage": Stage.requeueing, "eta_s": None}
    view = job_view(record, **changes)
    return JobOut(**view.model_dump(), queue_position=position, links=job_links(record.id))
