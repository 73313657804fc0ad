"""Jobs: create (202 + Location, Idempotency-Key, per-key cap), list (cursor pages), read, cancel."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from api.deps import CurrentOwner, JobStoreDep, ServicesDep
from api.job_params import request_hash, resolve_job
from api.job_views import JobOut, JobPage, to_view
from api.ownership import owned_job
from api.problems import Problem, field_error, problem_responses
from api.routes.webhooks import check_webhook, register_webhook
from sjc_service.idempotency import IdempotencyConflict, release
from sjc_service.jobs import ActiveJobLimit
from sjc_service.queue import enqueue_job
from sjc_service.schemas import JobCreate, JobStatus
from sjc_service.validation import IDEMPOTENCY_KEY_PATTERN

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger("sjc.api")
RETRY_AFTER_S = 30
PROBLEMS = problem_responses(400, 401, 404, 409, 413, 422, 429)
CURSOR_PATTERN = "^[A-Za-z0-9_-]+$"  # urlsafe base64 without padding, as next_cursor gives it


@router.post("", status_code=202, response_model=JobOut, responses=PROBLEMS)
def create_job(
    body: JobCreate,
    response: Response,
    owner: CurrentOwner,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(
        pattern=IDEMPOTENCY_KEY_PATTERN, description="1-200 printable ASCII characters ('!' to '~')")] = None,
) -> JobOut:
    """Queue a text-to-3D job. The same ``Idempotency-Key`` with the same body returns the same job;
    with a different body it is a 422 (draft-ietf-httpapi-idempotency-key-header, section 2.7)."""
    settings, jobs = services.settings, services.jobs
    spec = resolve_job(body, settings)
    check_webhook(body, services)
    try:
        record, created = jobs.create(owner, spec.to_dict(), idempotency_key, request_hash(body),
                                      idempotency_ttl_s=settings.idempotency_ttl_s,
                                      max_active=settings.max_active_jobs_per_key)
    except ActiveJobLimit as exc:
        raise Problem(
            429, f"This key already has {exc.limit} queued or running jobs; wait for one "
            "to finish or cancel one.", slug="too-many-active-jobs", title="Too many active jobs",
            headers={"Retry-After": str(RETRY_AFTER_S)}, limit=exc.limit,
        ) from None
    except IdempotencyConflict as exc:
        raise Problem(422, f"Idempotency-Key was already used with a different request (job {exc.job_id}).",
                      slug="idempotency-key-reused", title="Idempotency key reused", job_id=exc.job_id) from None
    if created:
        try:
            register_webhook(services, owner, record.id, body)
            enqueue_job(services.celery, record.id)
        except Exception as exc:  # broker down: leave nothing behind, so a retry starts clean
            log.exception("could not enqueue job %s", record.id)
            jobs.delete(record.id)
            if idempotency_key is not None:
                release(services.redis, owner, idempotency_key)
            raise Problem(503, "The job queue is unavailable; try again shortly.", slug="queue-unavailable",
                          headers={"Retry-After": "5"}) from exc
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return to_view(record, jobs)


@router.get("", response_model=JobPage, responses=PROBLEMS)
def list_jobs(
    jobs: JobStoreDep,
    owner: CurrentOwner,
    status: JobStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=200, pattern=CURSOR_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobPage:
    """Your jobs, newest first; ``next_cursor`` is ``null`` on the last page."""
    try:
        page, next_cursor = jobs.list(owner, status=status, cursor=cursor, limit=limit)
    except ValueError as exc:
        raise field_error("cursor", str(exc)) from None
    return JobPage(items=[to_view(r, jobs) for r in page], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=PROBLEMS)
def get_job(job_id: str, jobs: JobStoreDep, owner: CurrentOwner) -> JobOut:
    """Status, stage, progress, step/total, queue position, ETA, attempt, error, effective params, artifacts."""
    return to_view(owned_job(jobs, job_id, owner), jobs)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut, responses=PROBLEMS)
def cancel_job(job_id: str, jobs: JobStoreDep, owner: CurrentOwner) -> JobOut:
    """Cancel: a queued job is canceled at once; a running one stops at its worker's next check;
    a finished one (canceled included) is a 409."""
    record = owned_job(jobs, job_id, owner)
    changed, accepted = jobs.lifecycle.request_cancel(job_id)
    record = changed or record
    if not accepted:
        raise Problem(409, f"Job {job_id} has already finished ({record.status.value}).", slug="job-finished",
                      title="Job already finished", job_id=job_id, status_now=record.status.value)
    return to_view(record, jobs)
