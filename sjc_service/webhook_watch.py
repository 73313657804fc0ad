"""Turn job events into webhook deliveries.

Every status change of a job is already an event in its Redis stream, written in the same
transaction as the change (:mod:`sjc_service.events`). The watcher reads the streams of the jobs that
have a webhook (``sjc:webhook:watch``) from the cursor it keeps per job, and hands each event the
job's filter asks for to ``send`` (which queues a delivery). Nothing on the job's path (API, GPU
worker, reaper) has to know about webhooks, and no transition can be missed.

Idempotent: an event is handed over once per job (``HSETNX sent:<event>``), so two watchers, or a
watcher restarted from an old cursor, never send twice; a failed ``send`` is undone and retried.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from sjc_service.keyspace import events_key, job_key
from sjc_service.webhooks import WATCH_KEY, Delivery, forget, make_delivery, webhook_key

log = logging.getLogger(__name__)
Send = Callable[[Delivery, float], object]


def webhook_event(event: str, data: dict[str, Any]) -> str | None:
    """The webhook event a job event makes: ``started`` on the move to running, ``completed`` at the end."""
    if event == "done":
        return "completed"
    if event == "state" and data.get("status") == "running":
        return "started"
    return None


def watch_once(client: redis.Redis, send: Send, count: int = 200) -> int:
    """Read every watched job's new events once; returns how many deliveries were handed to ``send``."""
    sent = 0
    for job_id in sorted(client.smembers(WATCH_KEY)):
        hook = client.hgetall(webhook_key(job_id))
        if not hook or not client.exists(job_key(job_id)):  # the job was deleted
            forget(client, job_id)
            continue
        wanted = set(json.loads(hook["events"]))
        cursor = hook.get("cursor") or "0"
        reply = client.xread({events_key(job_id): cursor}, count=count)
        finished = False
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                data = json.loads(fields["data"])
                name = webhook_event(fields["event"], data)
                finished = finished or name == "completed"
                if name in wanted and client.hsetnx(webhook_key(job_id), f"sent:{name}", "1"):
                    try:
                        send(make_delivery(job_id, name, {"id": job_id, **data}), 0.0)
                        sent += 1
                    except Exception:
                        client.hdel(webhook_key(job_id), f"sent:{name}")
                        raise
                cursor = str(entry_id)
        if cursor != hook.get("cursor"):
            client.hset(webhook_key(job_id), "cursor", cursor)
        if finished:
            client.srem(WATCH_KEY, job_id)
    return sent


class Watcher(threading.Thread):
    """Runs :func:`watch_once` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, client: redis.Redis, send: Send, interval: float = 1.0) -> None:
        super().__init__(name="sjc-webhook-watch", daemon=True)
        self.client, self.send, self.interval = client, send, interval
        self._done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                watch_once(self.client, self.send)
            except Exception:  # noqa: BLE001 - keep watching after a Redis or broker blip
                log.exception("webhook watch tick failed")
            if self._done.wait(self.interval):
                return

    def stop(self) -> None:
        self._done.set()
