"""Owner scoping: a job that is not the caller's does not exist for the caller (404, never 403)."""

from __future__ import annotations

from api.problems import Problem
from sjc_service.jobs import JobStore
from sjc_service.schemas import JobRecord


def job_not_found(job_id: str) -> Problem:
    return Problem(404, f"No job {job_id!r}.", slug="job-not-found", title="Job not found", job_id=job_id)


def owned_job(jobs: JobStore, job_id: str, owner: str) -> JobRecord:
    """The caller's job ``job_id``; 404 problem when it is missing or belongs to someone else."""
    if len(job_id) > 64:
        raise job_not_found(job_id[:64])
    record = jobs.get(job_id)
    if record is None or record.owner != owner:
        raise job_not_found(job_id)
    return record
