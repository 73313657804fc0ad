"""The worker's Celery app: ``python -m celery -A worker.celery_app worker -Q gpu -c 1``.

Run one worker process (``-c 1``) per GPU. The parent process only consumes messages and runs the
reaper; the job runs in the pool child, which loads the model on its first job and keeps it, so
CUDA is never initialised in the parent (a forked child cannot use a parent's CUDA context).

Threads (:mod:`sjc_engine.threads`): ``OMP_WAIT_POLICY=PASSIVE`` unless set, before anything imports torch
(the child inherits it), and the child's torch threads from ``SJC_THREADS``, else every usable core.
"""

from __future__ import annotations

import logging

from sjc_engine.threads import apply_openmp_defaults

apply_openmp_defaults()  # before torch loads OpenMP, in this process and the pool children it forks

from celery.signals import worker_process_init, worker_ready, worker_shutdown  # noqa: E402

from sjc_service.queue import enqueue_job, make_celery  # noqa: E402
from sjc_service.settings import get_settings  # noqa: E402

settings = get_settings()
app = make_celery(settings)
app.conf.include = ["worker.tasks"]

log = logging.getLogger(__name__)
_reaper = None
_sweeper = None  # deletions and retention (sjc_service/retention.py)


@worker_process_init.connect
def _child_threads(**_kwargs) -> None:
    """The pool child runs the jobs: set its torch threads (it imports torch here, the parent never does)."""
    from sjc_engine.threads import set_torch_threads

    set_torch_threads()


@worker_ready.connect
def _start_reaper(sender=None, **_kwargs) -> None:
    """Start the crash reaper in the parent process (Redis only, no torch) and make sure the bucket exists."""
    global _reaper
    from sjc_service.connections import redis_from_settings
    from sjc_service.jobs import JobStore
    from sjc_service.store import make_store

    from worker.reaper import Reaper

    name = getattr(sender, "hostname", None) or "worker"
    jobs = JobStore(redis_from_settings(settings), events_maxlen=settings.events_maxlen)
    _reaper = Reaper(jobs, lambda job_id: enqueue_job(app, job_id),
                     interval=settings.reaper_interval_s, grace_s=settings.lease_ttl_s,
                     lease_ttl_s=settings.lease_ttl_s)
    _reaper.start()
    global _sweeper
    from sjc_service.retention import Sweeper

    _sweeper = Sweeper(jobs, make_store(settings), settings)
    _sweeper.start()
    try:
        make_store(settings).ensure_bucket()  # the artifacts' bucket (or folder), created if missing
    except Exception as exc:  # noqa: BLE001 - uploads will fail loudly; the worker still starts
        log.warning("object store unavailable at start-up: %s", exc)
    log.info("sjc worker %s ready (queue %s)", name, settings.queue_name)


@worker_shutdown.connect
def _stop_reaper(**_kwargs) -> None:
    if _reaper is not None:
        _reaper.stop()
    if _sweeper is not None:
        _sweeper.stop()
