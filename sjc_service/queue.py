"""The Celery app and how jobs are enqueued: the one place holding broker and transport options.

The API and the worker build their app with :func:`make_celery`, so both sides always share the
same transport options (Celery requires it: a client with a shorter ``visibility_timeout`` makes
the broker redeliver running jobs). The API sends tasks by name and never imports worker code.
"""

from __future__ import annotations

from celery import Celery

from sjc_service.settings import Settings

TASK_NAME = "sjc.run_job"


def make_celery(settings: Settings, main: str = "sjc") -> Celery:
    """A Celery app on ``settings.redis_url`` configured for long GPU jobs.

    - ``acks_late`` + ``task_reject_on_worker_lost``: a job whose worker dies is delivered again.
    - ``visibility_timeout`` above the hard time limit (checked by :class:`Settings`): a job that
      runs long is never handed to a second worker while the first still runs it.
    - prefetch 1: a worker holds one job at a time; the rest wait in the queue for free workers.
    - results are ignored: job state lives in Redis job records (:mod:`sjc_service.jobs`).
    """
    app = Celery(main, broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        task_routes={TASK_NAME: {"queue": settings.queue_name}},
        task_default_queue=settings.queue_name,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app


def enqueue_job(app: Celery, job_id: str) -> str:
    """Send ``sjc.run_job(job_id)`` to the GPU queue by name; returns the Celery task id."""
    queue = app.conf.task_routes.get(TASK_NAME, {}).get("queue") if isinstance(app.conf.task_routes, dict) else None
    result = app.send_task(TASK_NAME, args=[job_id], queue=queue or app.conf.task_default_queue)
    return str(result.id)
