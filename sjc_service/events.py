"""A job's progress as a Redis Stream: one ``XADD`` per event, ids usable as SSE ``Last-Event-ID``.

Event types: ``"state"`` (status/stage changes, published by :class:`~sjc_service.jobs.JobStore`
in the same transaction as the change), ``"progress"`` (step, total, progress, losses, eta_s),
``"preview"`` (artifact key) and ``"done"`` (the final record; the last event of a job).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from sjc_service.keyspace import events_key

EVENT_TYPES = ("state", "progress", "preview", "done")
DEFAULT_MAXLEN = 2000
FINISHED_STREAM_TTL_S = 7 * 24 * 3600


def xadd_event(client: Any, job_id: str, event: str, data: dict[str, Any], maxlen: int = DEFAULT_MAXLEN) -> Any:
    """``XADD`` one event on ``client`` (a Redis client or a pipeline inside a transaction)."""
    if event not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event!r}; expected one of {EVENT_TYPES}")
    fields = {"event": event, "data": json.dumps(data, default=str)}
    return client.xadd(events_key(job_id), fields, maxlen=maxlen, approximate=True)


class EventStream:
    """Publish and read a job's events.

    Args:
        redis: a ``redis.Redis`` client created with ``decode_responses=True``.
        maxlen: approximate cap on events kept per job.
    """

    def __init__(self, redis: redis.Redis, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.maxlen = maxlen

    def publish(self, job_id: str, event: str, data: dict[str, Any]) -> str:
        """Append an event; returns its stream id (e.g. ``"1718000000000-0"``)."""
        return str(xadd_event(self.redis, job_id, event, data, self.maxlen))

    def read(
        self, job_id: str, last_id: str = "0", block_ms: int | None = None, count: int = 100
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """Events after ``last_id`` (exclusive) as ``(id, event, data)``, oldest first.

        ``last_id="0"`` reads from the start; ``block_ms`` waits that long for new events when there
        are none yet (``None``: don't wait). Returns ``[]`` when nothing came.
        """
        reply = self.redis.xread({events_key(job_id): last_id or "0"}, count=count, block=block_ms)
        out: list[tuple[str, str, dict[str, Any]]] = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                out.append((str(entry_id), fields["event"], json.loads(fields["data"])))
        return out
