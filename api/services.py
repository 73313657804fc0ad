"""The app's long-lived clients, built once per app from :class:`Settings` (no I/O at build time).

Redis, the object store and the Celery producer all connect lazily, so the app starts (and
``/healthz`` answers) while its dependencies are still coming up; ``/readyz`` reports on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from sjc_service.connections import redis_from_url
from sjc_service.events import EventStream
from sjc_service.jobs import JobStore
from sjc_service.keys import ApiKeyStore
from sjc_service.queue import make_celery
from sjc_service.settings import Settings
from sjc_service.store import ObjectStore, make_store

log = logging.getLogger("sjc.api")


@dataclass
class Services:
    """Everything a request handler may need besides the request.

    Attributes:
        sse_heartbeat_s: seconds between SSE comment lines on an idle event stream.
        keys_ready: the bootstrap API keys of ``settings.api_keys`` are in Redis.
        sse_limiter: threads for the event streams' blocking reads (made on first use, in the loop).
    """

    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    events: EventStream
    store: ObjectStore
    celery: Celery
    keys: ApiKeyStore
    sse_heartbeat_s: float = 15.0
    keys_ready: bool = False
    sse_limiter: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, *, sse_heartbeat_s: float | None = None) -> "Services":
        client = redis_from_url(settings.redis_url)
        return cls(
            settings=settings,
            redis=client,
            jobs=JobStore(client, events_maxlen=settings.events_maxlen),
            events=EventStream(client, maxlen=settings.events_maxlen),
            store=make_store(settings),
            celery=make_celery(settings, main="sjc-api"),
            keys=ApiKeyStore(client),
            sse_heartbeat_s=sse_heartbeat_s or settings.sse_heartbeat_s,
        )

    def ensure_keys(self) -> None:
        """Add the bootstrap keys once (retried on the next request if Redis was down)."""
        if self.keys_ready:
            return
        count = self.keys.bootstrap(self.settings)
        self.keys_ready = True
        log.info("bootstrapped %d API key(s) from SJC_API_KEYS", count)

    def ensure_bucket(self) -> None:
        """Create the artifacts' bucket (or folder) if it is missing; an outage is logged, not raised
        (``/readyz`` reports the store until it answers)."""
        try:
            self.store.ensure_bucket()
        except Exception as exc:  # noqa: BLE001
            log.warning("object store unavailable at start-up (%s); /readyz will say so", exc)

    def close(self) -> None:
        self.redis.close()
