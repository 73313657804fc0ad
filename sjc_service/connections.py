"""The one way the service opens Redis: text replies (``decode_responses=True``), short timeouts."""

from __future__ import annotations

import redis

from sjc_service.settings import Settings


def redis_from_url(url: str, *, socket_timeout: float | None = 30.0) -> redis.Redis:
    """A Redis client for ``url`` returning ``str`` (what :class:`JobStore` and :class:`EventStream` expect).

    ``socket_timeout`` must exceed any ``XREAD BLOCK`` time used with the client.
    """
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
    )


def redis_from_settings(settings: Settings) -> redis.Redis:
    return redis_from_url(settings.redis_url)
