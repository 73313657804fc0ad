"""What a worker process talks to: settings, job records, event streams, the object store.

Built lazily once per process (after the fork: a Celery pool child never reuses its parent's sockets).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sjc_service.connections import redis_from_settings
from sjc_service.events import EventStream
from sjc_service.jobs import JobStore
from sjc_service.settings import Settings, get_settings
from sjc_service.store import ObjectStore, make_store


@dataclass
class WorkerContext:
    """Handles of one worker process.

    Attributes:
        worker_id: ``"{host}:{pid}"``, written into the leases this process holds.
    """

    settings: Settings
    jobs: JobStore
    events: EventStream
    store: ObjectStore
    worker_id: str

    @classmethod
    def from_settings(cls, settings: Settings, worker_id: str | None = None) -> "WorkerContext":
        redis = redis_from_settings(settings)
        return cls(
            settings=settings,
            jobs=JobStore(redis, events_maxlen=settings.events_maxlen),
            events=EventStream(redis, maxlen=settings.events_maxlen),
            store=make_store(settings),
            worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
        )


_CONTEXT: tuple[int, WorkerContext] | None = None


def get_context() -> WorkerContext:
    """This process's context (rebuilt after a fork)."""
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT[0] != os.getpid():
        _CONTEXT = (os.getpid(), WorkerContext.from_settings(get_settings()))
    return _CONTEXT[1]
