"""The job indexes beside the records: who is queued (in order), running and active per owner; counts
per status and the run-time histogram of finished jobs (``/metrics``).

:func:`move` is called inside the records' transaction whenever a job changes status, so an index
never disagrees with a record. Queue position has one source: the ``sjc:queue`` ranks, scored by
enqueue order, which is the broker's order (a requeued job is enqueued again, at the tail).
"""

from __future__ import annotations

from typing import Any

import redis

from sjc_service.keyspace import (COUNTS_KEY, DURATIONS_KEY, QUEUE_KEY, QUEUE_SEQ_KEY, RUNNING_KEY,
                                  owner_active_key, owner_jobs_key)
from sjc_service.schemas import ACTIVE, JobRecord, JobStatus

# upper bounds (seconds) of the run-time histogram of finished jobs, cumulative like Prometheus' ``le``
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


def next_queue_seq(client: Any) -> int:
    """A new enqueue-order number (run outside the ``MULTI`` block: its value is needed inside)."""
    return int(client.incr(QUEUE_SEQ_KEY))


def add_new(pipe: Any, rec: JobRecord, created_ms: int, queue_seq: int) -> None:
    """Index a just-created queued job."""
    pipe.zadd(owner_jobs_key(rec.owner), {rec.id: created_ms})
    pipe.sadd(owner_active_key(rec.owner), rec.id)
    pipe.zadd(QUEUE_KEY, {rec.id: queue_seq})
    pipe.hincrby(COUNTS_KEY, rec.status.value, 1)


def move(pipe: Any, old: JobRecord, new: JobRecord, queue_seq: int | None) -> None:
    """Move a job between the indexes for its change of status (``queue_seq``: needed when it becomes queued)."""
    pipe.hincrby(COUNTS_KEY, old.status.value, -1)
    pipe.hincrby(COUNTS_KEY, new.status.value, 1)
    if old.status == JobStatus.queued:
        pipe.zrem(QUEUE_KEY, new.id)
    if old.status == JobStatus.running:
        pipe.srem(RUNNING_KEY, new.id)
    if new.status == JobStatus.queued:
        if queue_seq is None:
            raise ValueError("a job that becomes queued needs its enqueue order")
        pipe.zadd(QUEUE_KEY, {new.id: queue_seq})
    if new.status == JobStatus.running:
        pipe.sadd(RUNNING_KEY, new.id)
    if new.status in ACTIVE:
        pipe.sadd(owner_active_key(new.owner), new.id)
    else:
        pipe.srem(owner_active_key(new.owner), new.id)


def remove(pipe: Any, rec: JobRecord) -> None:
    """Drop a deleted job from every index."""
    pipe.zrem(owner_jobs_key(rec.owner), rec.id)
    pipe.srem(owner_active_key(rec.owner), rec.id)
    pipe.zrem(QUEUE_KEY, rec.id)
    pipe.srem(RUNNING_KEY, rec.id)
    pipe.hincrby(COUNTS_KEY, rec.status.value, -1)


def record_duration(pipe: Any, seconds: float) -> None:
    """Count a finished job's run time in the histogram."""
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            pipe.hincrby(DURATIONS_KEY, f"le:{bound:g}", 1)
    pipe.hincrby(DURATIONS_KEY, "count", 1)
    pipe.hincrbyfloat(DURATIONS_KEY, "sum", seconds)


class JobIndexes:
    """Read side of the indexes.

    Args:
        redis: a client created with ``decode_responses=True``.
    """

    def __init__(self, redis: redis.Redis) -> None:
        self.redis = redis

    def queue_position(self, job_id: str) -> int | None:
        """Jobs queued ahead of this one (0: next to run); ``None`` if it is not queued."""
        rank = self.redis.zrank(QUEUE_KEY, job_id)
        return None if rank is None else int(rank)

    def queue_length(self) -> int:
        return int(self.redis.zcard(QUEUE_KEY))

    def running_ids(self) -> list[str]:
        return sorted(self.redis.smembers(RUNNING_KEY))

    def active_count(self, owner: str) -> int:
        """Queued + running jobs of ``owner``."""
        return int(self.redis.scard(owner_active_key(owner)))

    def counts_by_status(self) -> dict[str, int]:
        raw = self.redis.hgetall(COUNTS_KEY)
        return {s.value: int(raw.get(s.value, 0)) for s in JobStatus}

    def duration_histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative ``[(le, count), ..., ("+Inf", count)]`` and the sum of finished jobs' run times."""
        raw = self.redis.hgetall(DURATIONS_KEY)
        buckets = [(f"{b:g}", int(raw.get(f"le:{b:g}", 0))) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", int(raw.get("count", 0))))
        return buckets, float(raw.get("sum", 0.0))
