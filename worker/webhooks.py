"""The webhook worker: ``python -m celery -A worker.webhooks worker -Q webhooks -c 4``.

A Celery app of its own on the same broker (same transport options, :func:`make_celery`), consuming
only the webhooks queue: a slow receiver never holds a GPU worker, and webhook workers need no torch.
Its parent process runs the :class:`~sjc_service.webhook_watch.Watcher` that turns job events into
deliveries; each delivery is a task that POSTs once and, when that fails, queues its next attempt
with a countdown (exponential backoff, :class:`~sjc_service.webhooks.WebhookSettings`).
"""

from __future__ import annotations

import dataclasses
import logging
import os

from celery.signals import worker_ready, worker_shutdown

from sjc_service.connections import redis_from_settings
from sjc_service.queue import make_celery
from sjc_service.settings import get_settings
from sjc_service.webhook_watch import Watcher
from sjc_service.webhooks import DELIVER_TASK, Delivery, WebhookSettings, attempt_delivery

settings = get_settings()
hooks = WebhookSettings.from_settings(settings)
if hooks.queue == settings.queue_name:
    raise ValueError(f"SJC_WEBHOOK_QUEUE ({hooks.queue!r}) must differ from the GPU queue SJC_QUEUE_NAME")
app = make_celery(settings, main="sjc-webhooks")
app.conf.update(task_routes={DELIVER_TASK: {"queue": hooks.queue}}, task_default_queue=hooks.queue,
                task_soft_time_limit=int(hooks.timeout_s) + 20, task_time_limit=int(hooks.timeout_s) + 30)

log = logging.getLogger(__name__)
_watcher: Watcher | None = None
_redis: tuple[int, object] | None = None


def redis_client():  # noqa: ANN201 - redis.Redis
    """This process's Redis client (made again after a fork)."""
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), redis_from_settings(settings))
    return _redis[1]


def send(delivery: Delivery, delay_s: float) -> str:
    """Queue ``delivery`` on the webhooks queue, to run in ``delay_s`` seconds."""
    result = app.send_task(DELIVER_TASK, args=delivery.as_args(), queue=hooks.queue, countdown=delay_s or None)
    return str(result.id)


@app.task(name=DELIVER_TASK)
def deliver_webhook(job_id: str, event: str, webhook_id: str, body: str, attempt: int) -> str:
    """One attempt of one delivery; queues the next attempt when it failed and attempts remain."""
    delivery = Delivery(job_id, event, webhook_id, body, attempt)
    delay = attempt_delivery(redis_client(), delivery, hooks)
    if delay is None:
        return "done"
    send(dataclasses.replace(delivery, attempt=attempt + 1), delay)
    return f"retry in {delay:.0f}s"


@worker_ready.connect
def _start_watcher(sender=None, **_kwargs) -> None:
    global _watcher
    if getattr(sender, "app", app) is not app:  # another app's worker in this process
        return
    _watcher = Watcher(redis_from_settings(settings), send, interval=hooks.watch_interval_s)
    _watcher.start()
    log.info("sjc webhook worker ready (queue %s)", hooks.queue)


@worker_shutdown.connect
def _stop_watcher(**_kwargs) -> None:
    if _watcher is not None:
        _watcher.stop()
