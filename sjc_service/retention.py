"""Deleting jobs: on request (``DELETE /v1/jobs/{id}``) and after a retention period (a periodic sweep).

A finished job is deleted at once: its files under ``jobs/{id}/``, then its record, indexes, events,
webhook and counters. An active job is canceled first and marked for deletion (``sjc:delete:pending``);
the sweep deletes it once it has finished, so a worker still stopping never writes files after the
deletion. A short tombstone (``sjc:deleted:{owner}:{id}``) makes a repeated ``DELETE`` answer the same.

Retention: the sweep also deletes every job that finished more than ``retention_days`` ago (default 7).
It runs every ``sweep_interval_s`` in the GPU workers' parent process, beside the crash reaper. The
deployment alternative is an S3 lifecycle rule expiring ``jobs/`` objects after the same number of days
(then only records are left for the sweep); see README, "Deletion and retention".
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from sjc_service import webhooks
from sjc_service.keyspace import DELETE_PENDING_KEY as PENDING_KEY
from sjc_service.keyspace import OWNER_JOBS_PATTERN, job_prefix, outage_key, tombstone_key
from sjc_service.schemas import TERMINAL
from sjc_service.settings import Settings

log = logging.getLogger(__name__)
TOMBSTONE_TTL_S = 24 * 3600


def was_deleted(client: Any, owner: str, job_id: str) -> bool:
    """Whether ``owner`` deleted ``job_id`` lately (a repeated ``DELETE`` is then a success again)."""
    return bool(client.exists(tombstone_key(owner, job_id)))


def delete_now(jobs: Any, store: Any, job_id: str) -> bool:
    """Remove the job's files, then its record and everything keyed on it; ``False`` if it was gone."""
    rec = jobs.get(job_id)
    if rec is None:
        return False
    store.delete_prefix(job_prefix(job_id))
    webhooks.forget(jobs.redis, job_id)
    pipe = jobs.redis.pipeline(transaction=False)
    pipe.delete(outage_key(job_id))
    pipe.srem(PENDING_KEY, job_id)
    pipe.set(tombstone_key(rec.owner, job_id), "1", ex=TOMBSTONE_TTL_S)
    pipe.execute()
    jobs.delete(job_id)
    log.info("job %s of %s deleted", job_id, rec.owner)
    return True


def request_delete(jobs: Any, store: Any, job_id: str) -> Literal["deleted", "pending", "gone"]:
    """Delete a finished job now; cancel an active one and delete it when it has finished."""
    rec = jobs.get(job_id)
    if rec is None:
        return "gone"
    if rec.status in TERMINAL:
        return "deleted" if delete_now(jobs, store, job_id) else "gone"
    jobs.redis.sadd(PENDING_KEY, job_id)
    jobs.lifecycle.request_cancel(job_id)
    after = jobs.get(job_id)
    if after is not None and after.status in TERMINAL:  # a queued job is canceled at once
        return "deleted" if delete_now(jobs, store, job_id) else "gone"
    return "pending"


def expired_ids(jobs: Any, retention_s: float, now: datetime | None = None) -> list[str]:
    """Finished jobs whose ``finished_at`` is older than ``retention_s`` (created before the cutoff too)."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(seconds=retention_s)
    found: list[str] = []
    for key in jobs.redis.scan_iter(OWNER_JOBS_PATTERN, count=500):
        ids = jobs.redis.zrangebyscore(key, "-inf", int(cutoff.timestamp() * 1000))
        for job_id in ids:
            rec = jobs.get(job_id)
            if rec is not None and rec.status in TERMINAL and rec.finished_at is not None and rec.finished_at < cutoff:
                found.append(job_id)
    return found


def sweep(jobs: Any, store: Any, retention_s: float | None, now: datetime | None = None) -> list[str]:
    """Delete finished jobs marked for deletion and, with ``retention_s``, every expired one; returns ids."""
    deleted: list[str] = []
    for job_id in sorted(jobs.redis.smembers(PENDING_KEY)):
        rec = jobs.get(job_id)
        if rec is None:
            jobs.redis.srem(PENDING_KEY, job_id)
        elif rec.status in TERMINAL and delete_now(jobs, store, job_id):
            deleted.append(job_id)
    if retention_s:
        for job_id in expired_ids(jobs, retention_s, now):
            if delete_now(jobs, store, job_id):
                deleted.append(job_id)
    return deleted


class Sweeper(threading.Thread):
    """Runs :func:`sweep` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, jobs: Any, store: Any, settings: Settings) -> None:
        super().__init__(name="sjc-sweeper", daemon=True)
        self.jobs, self.store, self.settings = jobs, store, settings
        self._done = threading.Event()

    def run(self) -> None:
        retention_s = self.settings.retention_days * 86400 or None
        while True:
            started = time.monotonic()
            try:
                deleted = sweep(self.jobs, self.store, retention_s)
                if deleted:
                    log.info("sweep deleted %d job(s) in %.1f s", len(deleted), time.monotonic() - started)
            except Exception:  # noqa: BLE001 - keep sweeping after a Redis or store blip
                log.exception("sweep failed")
            if self._done.wait(self.settings.sweep_interval_s):
                return

    def stop(self) -> None:
        self._done.set()
