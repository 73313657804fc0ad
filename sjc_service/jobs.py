"""The job store: records (:mod:`~sjc_service.records`), their lifecycle, indexes and leases, in one handle.

Each concern has its module; :class:`JobStore` only creates jobs (with an ``Idempotency-Key`` and the
owner's cap in one transaction), lists and deletes them, and hands out the rest:
``jobs.lifecycle`` (the named transitions), ``jobs.indexes`` (queue position, counts, metrics) and
``jobs.leases`` (workers' leases). Redis key names are in :mod:`sjc_service.keyspace`.
"""

from __future__ import annotations

from typing import Any

import redis

from sjc_service import idempotency, indexes
from sjc_service.events import DEFAULT_MAXLEN
from sjc_service.indexes import JobIndexes
from sjc_service.keyspace import events_key, job_key, lease_key, owner_active_key
from sjc_service.leases import Leases
from sjc_service.lifecycle import JobStatus, Lifecycle, Stage, utcnow
from sjc_service.paging import list_jobs
from sjc_service.records import JobRecords, new_job_id
from sjc_service.schemas import JobRecord


class ActiveJobLimit(RuntimeError):
    """The owner already has ``limit`` queued or running jobs (HTTP 429)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the owner already has {limit} queued or running jobs")
        self.limit = limit


class JobStore:
    """Jobs in Redis.

    Args:
        redis: a client created with ``decode_responses=True`` (see :mod:`sjc_service.connections`).
        events_maxlen: approximate cap of each job's event stream.
    """

    def __init__(self, redis: redis.Redis, events_maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.records = JobRecords(redis, events_maxlen)
        self.lifecycle = Lifecycle(self.records)
        self.indexes = JobIndexes(redis)
        self.leases = Leases(redis)

    def get(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    def create(
        self,
        owner: str,
        spec: dict[str, Any],
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        idempotency_ttl_s: int = 24 * 3600,
        max_active: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """Create a queued job running ``spec`` (``RunSpec.to_dict()``); returns ``(record, created)``.

        With ``idempotency_key``, a second call with the same key returns the first job and
        ``created=False``; with a different ``request_hash`` it raises ``IdempotencyConflict``.
        With ``max_active``, raises :class:`ActiveJobLimit` when the owner already has that many
        queued or running jobs; the check and the insert are one optimistic transaction, so
        concurrent requests cannot overshoot the cap.
        """
        job_id = new_job_id()
        if idempotency_key is not None and not idempotency.claim(
                self.redis, owner, idempotency_key, job_id, request_hash, idempotency_ttl_s):
            return idempotency.claimed_job(self.redis, owner, idempotency_key, request_hash, self.get), False
        now = utcnow()
        total = int(spec.get("settings", {}).get("steps") or 0)
        rec = JobRecord(id=job_id, owner=owner, status=JobStatus.queued, stage=Stage.queued, total_steps=total,
                        spec=spec, created_at=now, updated_at=now)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(owner_active_key(owner))
                    if max_active is not None and pipe.scard(owner_active_key(owner)) >= max_active:
                        pipe.unwatch()
                        if idempotency_key is not None:
                            idempotency.release(self.redis, owner, idempotency_key)
                        raise ActiveJobLimit(max_active)
                    seq = indexes.next_queue_seq(pipe)
                    pipe.multi()
                    self.records.insert(pipe, rec)
                    indexes.add_new(pipe, rec, int(now.timestamp() * 1000), seq)
                    pipe.execute()
                    return rec, True
                except redis.WatchError:
                    continue

    def list(
        self, owner: str, status: JobStatus | str | None = None, cursor: str | None = None, limit: int = 20
    ) -> tuple[list[JobRecord], str | None]:
        """The owner's jobs, newest first (:func:`sjc_service.paging.list_jobs`)."""
        return list_jobs(self.records, owner, status=status, cursor=cursor, limit=limit)

    def delete(self, job_id: str) -> bool:
        """Remove a job's record, indexes, lease and events (not its stored files)."""
        rec = self.get(job_id)
        if rec is None:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(job_key(job_id), lease_key(job_id), events_key(job_id))
        indexes.remove(pipe, rec)
        pipe.execute()
        return True
