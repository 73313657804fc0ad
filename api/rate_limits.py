"""Per-key request rate limits on the API: a dependency that takes a token, a middleware that adds headers.

:func:`rate_limited` runs on every authenticated ``/v1`` route (after the key's owner is known): it
takes one token from the owner's bucket (:mod:`sjc_service.ratelimit`) and answers 429 problem+json
with ``Retry-After`` when none is left. :class:`RateLimitHeaders` puts ``RateLimit-Policy`` and
``RateLimit`` on the response of every request that took a token, streamed responses included. The
per-key cap on queued + running jobs is separate (``SJC_MAX_ACTIVE_JOBS_PER_KEY``, 429 on create).
"""

from __future__ import annotations

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CurrentOwner
from api.problems import Problem
from sjc_service.ratelimit import RateLimiter

STATE_KEY = "ratelimit_headers"


def limiter_of(request: Request) -> RateLimiter:
    """The app's limiter (made on first use from its settings)."""
    services = request.app.state.services
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        s = services.settings
        limiter = RateLimiter(services.redis, s.rate_limit_per_min, s.rate_limit_burst)
        request.app.state.rate_limiter = limiter
    return limiter


def rate_limited(request: Request, owner: CurrentOwner) -> None:
    """Take a token from the caller's bucket; 429 with ``Retry-After`` when it is empty."""
    limiter = limiter_of(request)
    if not limiter.enabled:
        return
    decision = limiter.take(owner)
    request.scope.setdefault("state", {})[STATE_KEY] = decision.headers()
    if not decision.allowed:
        raise Problem(429, f"This key made more than {limiter.burst} requests in a burst or "
                      f"{limiter.per_min:g} a minute; retry in {decision.retry_after_s} s.",
                      slug="rate-limited", title="Too many requests", headers=decision.headers(),
                      limit_per_min=limiter.per_min, burst=limiter.burst)


class RateLimitHeaders:
    """Pure ASGI middleware: copies the headers :func:`rate_limited` left in the scope onto the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get(STATE_KEY)
                if extra:
                    have = {k.lower() for k, _ in message.get("headers", [])}
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], *((k.lower().encode(), v.encode())
                                                                 for k, v in extra.items()
                                                                 if k.lower().encode() not in have)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
