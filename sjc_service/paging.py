"""An owner's jobs, newest first, in pages with opaque cursors (``base64url("<created ms>:<id>")``)."""

from __future__ import annotations

import base64

from sjc_service.keyspace import owner_jobs_key
from sjc_service.lifecycle import JobStatus
from sjc_service.records import JobRecords
from sjc_service.schemas import JobRecord


def encode_cursor(score: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{int(score)}:{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """``(score, job_id)``; raises ``ValueError`` on anything a previous page did not give."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, job_id = text.split(":", 1)
        return int(score), job_id
    except Exception as exc:  # noqa: BLE001 - any garbage is the same client error
        raise ValueError(f"invalid cursor {cursor!r}") from exc


def list_jobs(
    records: JobRecords, owner: str, status: JobStatus | str | None = None, cursor: str | None = None,
    limit: int = 20,
) -> tuple[list[JobRecord], str | None]:
    """The owner's jobs, newest first; returns ``(page, next_cursor)`` (``None`` on the last page).

    ``cursor`` is the opaque string a previous call returned; raises ``ValueError`` on garbage.
    """
    if limit < 1:
        raise ValueError("limit must be >= 1")
    want = JobStatus(status) if status is not None else None
    max_score: str | int = "+inf"
    after: tuple[int, str] | None = None
    if cursor:
        after = decode_cursor(cursor)
        max_score = after[0]
    found: list[tuple[JobRecord, float]] = []
    offset, batch = 0, max(2 * limit, 50)
    key = owner_jobs_key(owner)
    while len(found) <= limit:
        items = records.redis.zrevrangebyscore(key, max_score, "-inf", start=offset, num=batch, withscores=True)
        if not items:
            break
        offset += len(items)
        # same-score members come in reverse lexicographic order: skip those at or before the cursor
        kept = [(m, s) for m, s in items if after is None or int(s) < after[0] or m < after[1]]
        for (_member, score), rec in zip(kept, records.get_many(m for m, _ in kept)):
            if rec is None or (want is not None and rec.status != want):
                continue
            found.append((rec, score))
            if len(found) > limit:
                break
    page = [rec for rec, _ in found[:limit]]
    next_cursor = encode_cursor(found[limit - 1][1], page[-1].id) if len(found) > limit else None
    return page, next_cursor
