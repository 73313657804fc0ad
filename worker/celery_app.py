"""The worker's Celery app: ``python -m celery -A worker.celery_app worker -Q gpu -c 1``.

Run one worker process (``-c 1``) per GPU. The parent process only consumes messages and runs the
reaper; the job runs in the pool child, which loads the model on its first job and keeps it, so
CUDA is never initialised in the parent (a forked child cannot use a parent's CUDA context).
"""

from __future__ import annotations

import logging

from celery.signals import worker_ready, worker_shutdown

from sjc_service.queue import enqueue_job, make_celery
from sjc_service.settings import get_settings

settings = get_settings()
app = make_celery(settings)
app.conf.include = ["worker.tasks"]

log = logging.getLogger(__name__)
_reaper = None


@worker_ready.connect
def _start_reaper(sender=None, **_kwargs) -> None:
    """Start the crash reaper and heartbeat in the parent process (Redis only, no torch)."""
    global _reaper
    from sjc_service.connections import redis_from_settings
    from sjc_service.jobs import JobStore

    from worker.reaper import Reaper

    name = getattr(sender, "hostname", None) or "worker"
    jobs = JobStore(redis_from_settings(settings), events_maxlen=settings.events_maxlen)
    _reaper = Reaper(jobs, lambda job_id: enqueue_job(app, job_id), name,
                     interval=settings.reaper_interval_s, grace_s=settings.lease_ttl_s)
    _reaper.start()
    log.info("sjc worker %s ready (queue %s)", name, settings.queue_name)


@worker_shutdown.connect
def _stop_reaper(**_kwargs) -> None:
    if _reaper is not None:
        _reaper.stop()
