"""``GET /v1/usage``: what the caller's key has used: jobs by status, compute seconds, limits.

Counted from the key's job records (deleted and expired jobs no longer count). Compute seconds are
the wall-clock seconds from each job's first start to its end (to now for a running job), resumes
included: what a GPU spent on the key's jobs, give or take the gaps between attempts.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import CurrentOwner, ServicesDep
from api.problems import problem_responses
from api.rate_limits import limiter_of
from sjc_service.keyspace import job_key, owner_jobs_key
from sjc_service.schemas import JobStatus

router = APIRouter(tags=["usage"])
BATCH = 500


class RateLimitInfo(BaseModel):
    per_min: float = Field(description="requests per minute (0: no limit)")
    burst: int = Field(description="requests the key may make at once")
    remaining: int = Field(description="requests the key may make right now")


class Usage(BaseModel):
    """The caller's usage."""

    owner: str
    jobs: dict[str, int] = Field(description="jobs by status")
    total_jobs: int
    compute_s: float = Field(description="wall-clock run time of the key's jobs, first start to end")
    active_jobs: int
    max_active_jobs: int
    rate_limit: RateLimitInfo


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    text = json.loads(value)
    return datetime.fromisoformat(text) if text else None


@router.get("/usage", response_model=Usage, responses=problem_responses(401, 429))
def usage(request: Request, services: ServicesDep, owner: CurrentOwner) -> Usage:
    """Jobs by status, compute seconds, and the key's limits (active-job cap, request rate)."""
    client = services.redis
    ids = client.zrange(owner_jobs_key(owner), 0, -1)
    counts = {s.value: 0 for s in JobStatus}
    compute_s = 0.0
    now = datetime.now(timezone.utc)
    for i in range(0, len(ids), BATCH):
        pipe = client.pipeline(transaction=False)
        for job_id in ids[i:i + BATCH]:
            pipe.hmget(job_key(job_id), "status", "started_at", "finished_at")
        for status, started, finished in pipe.execute():
            if status is None:
                continue
            counts[json.loads(status)] = counts.get(json.loads(status), 0) + 1
            start, end = _parse(started), _parse(finished)
            if start is not None:
                compute_s += max(0.0, ((end or now) - start).total_seconds())
    limiter = limiter_of(request)
    s = services.settings
    return Usage(owner=owner, jobs=counts, total_jobs=sum(counts.values()), compute_s=round(compute_s, 3),
                 active_jobs=counts["queued"] + counts["running"], max_active_jobs=s.max_active_jobs_per_key,
                 rate_limit=RateLimitInfo(per_min=s.rate_limit_per_min, burst=s.rate_limit_burst,
                                          remaining=limiter.peek(owner)))
