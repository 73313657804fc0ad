"""Job records in Redis: read them, and change one in a single optimistic transaction.

:meth:`JobRecords.apply` is the only writer of an existing record: inside one ``WATCH``/``MULTI`` it
reads the record, computes the change, writes it, moves the job between the indexes when its status
changes and publishes a ``state`` event (and ``done`` when it finishes), so readers never see a status
without its event or index entry. The lifecycle's transitions (:mod:`sjc_service.lifecycle`) are
built on it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from pydantic_core import to_jsonable_python

from sjc_service import indexes
from sjc_service.events import DEFAULT_MAXLEN, FINISHED_STREAM_TTL_S, xadd_event
from sjc_service.keyspace import events_key, job_key
from sjc_service.lifecycle import TERMINAL, JobStatus, utcnow
from sjc_service.schemas import JobRecord
from sjc_service.views import job_view


def new_job_id() -> str:
    """Time-ordered id: 12 hex digits of milliseconds, then 16 random hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(to_jsonable_python(v)) for k, v in fields.items()}


def decode(raw: dict[str, str]) -> JobRecord:
    return JobRecord.model_validate({k: json.loads(v) for k, v in raw.items()})


def state_data(rec: JobRecord) -> dict[str, Any]:
    """The body of a ``state`` event."""
    return {
        "status": rec.status.value,
        "stage": rec.stage.value,
        "attempt": rec.attempt,
        "step": rec.step,
        "total": rec.total_steps,
        "progress": rec.progress,
        "resumed_from_step": rec.resumed_from_step,
        "error": rec.error.model_dump() if rec.error else None,
    }


class JobRecords:
    """Read and change job records.

    Args:
        redis: a client created with ``decode_responses=True`` (see :mod:`sjc_service.connections`).
        events_maxlen: approximate cap of each job's event stream.
    """

    def __init__(self, redis: redis.Redis, events_maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.events_maxlen = events_maxlen

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(job_key(job_id))
        return decode(raw) if raw else None

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        return [decode(raw) if raw else None for raw in pipe.execute()]

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a cancel was asked for (one field read: the worker polls it)."""
        return self.redis.hget(job_key(job_id), "cancel_requested") == "true"

    def insert(self, pipe: Any, rec: JobRecord) -> None:
        """Write a new record and its first ``state`` event into ``pipe`` (inside the creator's ``MULTI``)."""
        pipe.hset(job_key(rec.id), mapping=encode(rec.model_dump()))
        xadd_event(pipe, rec.id, "state", state_data(rec), self.events_maxlen)

    def apply(self, job_id: str, change: Callable[[JobRecord], dict[str, Any] | None]) -> JobRecord | None:
        """Change a record atomically: ``change(current)`` returns the fields to set, or ``None`` to leave
        it as it is. Returns the new record, or ``None`` (no such job, or no change)."""
        key = job_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hgetall(key)
                    if not raw:
                        return None
                    old = decode(raw)
                    fields = change(old)
                    if fields is None:
                        return None
                    new = self._write(pipe, old, dict(fields))
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue

    def _write(self, pipe: Any, old: JobRecord, fields: dict[str, Any]) -> JobRecord:
        now = utcnow()
        fields["updated_at"] = now
        moved = JobStatus(fields.get("status", old.status)) != old.status
        if moved and JobStatus(fields["status"]) in TERMINAL:
            fields.setdefault("finished_at", now)
            fields.setdefault("eta_s", None)
        new = JobRecord.model_validate({**old.model_dump(), **fields})
        seq = indexes.next_queue_seq(pipe) if moved and new.status == JobStatus.queued else None
        pipe.multi()
        pipe.hset(job_key(old.id), mapping=encode({k: getattr(new, k) for k in fields}))
        if moved:
            indexes.move(pipe, old, new, seq)
        if moved or new.stage != old.stage:
            xadd_event(pipe, old.id, "state", state_data(new), self.events_maxlen)
        if moved and new.status in TERMINAL:
            if new.started_at is not None and new.finished_at is not None:
                indexes.record_duration(pipe, (new.finished_at - new.started_at).total_seconds())
            xadd_event(pipe, old.id, "done", job_view(new).model_dump(mode="json"), self.events_maxlen)
            pipe.expire(events_key(old.id), FINISHED_STREAM_TTL_S)
        return new
