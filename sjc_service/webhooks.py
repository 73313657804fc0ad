"""Webhooks: a job's ``webhook_url`` gets signed POSTs when the job starts and when it ends.

Signed per Standard Webhooks 1.0 (the ``standardwebhooks`` package): headers ``webhook-id``,
``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">``, with one ``whsec_`` secret per API key owner (``GET /v1/webhook-secret``).
Receivers should reject timestamps more than 5 minutes off and de-duplicate on ``webhook-id``: a
delivery retried after a timeout carries the same id.

Events (a job's ``webhook_events`` filter; default both):

- ``started``: the job's first move to ``running`` (resumes after a crash do not repeat it).
- ``completed``: the job finished; ``data.status`` is ``succeeded``, ``failed`` or ``canceled``.

Body: ``{"type": "job.started" | "job.completed", "timestamp": ISO 8601, "data": {...job...}}``.

Deliveries go out from a Celery queue of their own (``SJC_WEBHOOK_QUEUE``, never the GPU queue); a
failed one (no answer, or a status other than 2xx) is retried with exponential backoff
(``backoff_s`` doubling up to ``max_backoff_s``, ``max_attempts`` in all: about 80 minutes with the
defaults). Every attempt is recorded and shown at ``GET /v1/jobs/{id}/webhook-deliveries``.
Targets on private, loopback, link-local, multicast or reserved addresses are refused (at creation
and again before each attempt, against DNS rebinding) unless ``allow_private_targets`` is set.

Redis keys: ``sjc:webhook:secrets`` (hash owner -> secret), ``sjc:job:{id}:webhook`` (hash: url,
events, owner, cursor, sent:<event>), ``sjc:job:{id}:webhook:deliveries`` (list of JSON attempts),
``sjc:webhook:watch`` (set of job ids whose events are still to be turned into deliveries).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import redis

from sjc_service.settings import Settings

log = logging.getLogger(__name__)

WebhookEvent = Literal["started", "completed"]
WEBHOOK_EVENTS: tuple[str, ...] = ("started", "completed")
SECRETS_KEY = "sjc:webhook:secrets"
WATCH_KEY = "sjc:webhook:watch"
DELIVER_TASK = "sjc.deliver_webhook"
MAX_KEPT_DELIVERIES = 100


@dataclass(frozen=True)
class WebhookSettings:
    """Webhook settings (``Settings.webhook_*``, i.e. ``SJC_WEBHOOK_*``; see :meth:`from_settings`).

    Args:
        queue: the Celery queue of deliveries (default ``"webhooks"``; never the GPU queue).
        allow_private_targets: accept URLs on private, loopback and link-local addresses (tests, closed
            networks); default ``False``.
        backoff_s: delay before the first retry, doubled at each retry (default 30 s).
        max_backoff_s: longest delay between two attempts (default 1,200 s).
        max_attempts: attempts of one delivery, the first included (default 10: the last one about
            80 minutes after the first with the defaults).
        timeout_s: seconds a receiver has to answer (default 10 s).
        watch_interval_s: seconds between two scans of job events for deliveries to send (default 1 s).
    """

    queue: str = "webhooks"
    allow_private_targets: bool = False
    backoff_s: float = 30.0
    max_backoff_s: float = 1200.0
    max_attempts: int = 10
    timeout_s: float = 10.0
    watch_interval_s: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "WebhookSettings":
        return cls(queue=settings.webhook_queue, allow_private_targets=settings.webhook_allow_private_targets,
                   backoff_s=settings.webhook_backoff_s, max_backoff_s=settings.webhook_max_backoff_s,
                   max_attempts=settings.webhook_max_attempts, timeout_s=settings.webhook_timeout_s,
                   watch_interval_s=settings.webhook_watch_interval_s)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (2, 3, ...)."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 2))


class TargetRefused(ValueError):
    """A webhook URL the service will not call (bad scheme, or an address it may not reach)."""


def check_target(url: str, allow_private: bool = False) -> str:
    """Return ``url`` if the service may POST to it; raise :class:`TargetRefused` saying why.

    The host is resolved; every address it resolves to must be public unless ``allow_private``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise TargetRefused("must not carry credentials")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise TargetRefused(f"host {parts.hostname!r} does not resolve") from exc
    if allow_private:
        return url
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not addr.is_global or addr.is_multicast:
            raise TargetRefused(f"host {parts.hostname!r} resolves to a non-public address ({addr}); "
                                "the service does not call private, loopback or link-local addresses")
    return url


# ---- secrets ------------------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_for(client: redis.Redis, owner: str) -> str:
    """The owner's signing secret, made on first use (the same for all of the owner's jobs)."""
    client.hsetnx(SECRETS_KEY, owner, new_secret())
    return str(client.hget(SECRETS_KEY, owner))


def rotate_secret(client: redis.Redis, owner: str) -> str:
    """Replace the owner's secret; deliveries from now on are signed with the new one."""
    secret = new_secret()
    client.hset(SECRETS_KEY, owner, secret)
    return secret


# ---- a job's webhook -----------------------------------------------------------------------------


def webhook_key(job_id: str) -> str:
    return f"sjc:job:{job_id}:webhook"


def deliveries_key(job_id: str) -> str:
    return f"sjc:job:{job_id}:webhook:deliveries"


def register(client: redis.Redis, job_id: str, owner: str, url: str, events: list[str]) -> None:
    """Remember the job's webhook and start watching its events."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(webhook_key(job_id), mapping={"url": url, "events": json.dumps(sorted(set(events))), "owner": owner,
                                            "cursor": "0"})
    pipe.sadd(WATCH_KEY, job_id)
    pipe.execute()


def forget(client: redis.Redis, job_id: str) -> None:
    """Drop the job's webhook, its delivery log and its watch entry (job deleted)."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(webhook_key(job_id), deliveries_key(job_id))
    pipe.srem(WATCH_KEY, job_id)
    pipe.execute()


def webhook_of(client: redis.Redis, job_id: str) -> dict[str, Any] | None:
    """``{"url", "events"}`` of the job's webhook, or ``None``."""
    raw = client.hgetall(webhook_key(job_id))
    if not raw:
        return None
    return {"url": raw["url"], "events": json.loads(raw["events"])}


def deliveries(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """Every delivery attempt of the job's webhook, oldest first."""
    return [json.loads(item) for item in client.lrange(deliveries_key(job_id), 0, -1)]


# ---- one delivery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One message to send: ``webhook_id`` stays the same across its attempts."""

    job_id: str
    event: str
    webhook_id: str
    body: str
    attempt: int = 1

    def as_args(self) -> list[Any]:
        return [self.job_id, self.event, self.webhook_id, self.body, self.attempt]


def make_delivery(job_id: str, event: str, data: dict[str, Any]) -> Delivery:
    body = json.dumps({"type": f"job.{event}", "timestamp": datetime.now(timezone.utc).isoformat(),
                       "data": data}, default=str, separators=(",", ":"))
    return Delivery(job_id, event, f"msg_{job_id}_{event}", body)


def signed_headers(secret: str, webhook_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of ``body``."""
    from standardwebhooks.webhooks import Webhook

    now = now or datetime.now(timezone.utc)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
        "content-type": "application/json",
        "user-agent": "sjc-webhooks/1",
    }


def attempt_delivery(client: redis.Redis, delivery: Delivery, settings: WebhookSettings,
                     http: httpx.Client | None = None) -> float | None:
    """Send ``delivery`` once and record the attempt; returns the delay before the next attempt, or
    ``None`` when there is none to make (delivered, given up, or the job's webhook is gone)."""
    hook = client.hgetall(webhook_key(delivery.job_id))
    if not hook:
        return None
    record: dict[str, Any] = {"webhook_id": delivery.webhook_id, "event": delivery.event, "attempt": delivery.attempt,
                              "at": datetime.now(timezone.utc).isoformat(), "status_code": None, "error": None}
    started = time.monotonic()
    try:
        check_target(hook["url"], settings.allow_private_targets)
        headers = signed_headers(secret_for(client, hook["owner"]), delivery.webhook_id, delivery.body)
        own = http is None
        http = http or httpx.Client(timeout=settings.timeout_s, follow_redirects=False)
        try:
            response = http.post(hook["url"], content=delivery.body.encode(), headers=headers)
        finally:
            if own:
                http.close()
        record["status_code"] = response.status_code
        ok = 200 <= response.status_code < 300
        if not ok:
            record["error"] = f"the receiver answered {response.status_code}"
    except TargetRefused as exc:
        ok, record["error"] = False, f"target refused: {exc}"
    except httpx.HTTPError as exc:
        ok, record["error"] = False, f"{type(exc).__name__}: no answer"
    record["duration_ms"] = round(1000 * (time.monotonic() - started))
    record["delivered"] = ok
    delay = None if ok or delivery.attempt >= settings.max_attempts else settings.delay_before(delivery.attempt + 1)
    record["next_attempt_in_s"] = delay
    pipe = client.pipeline(transaction=False)
    pipe.rpush(deliveries_key(delivery.job_id), json.dumps(record))
    pipe.ltrim(deliveries_key(delivery.job_id), -MAX_KEPT_DELIVERIES, -1)
    pipe.execute()
    if not ok:
        log.warning("webhook %s of job %s, attempt %d: %s", delivery.webhook_id, delivery.job_id,
                    delivery.attempt, record["error"])
    return delay
