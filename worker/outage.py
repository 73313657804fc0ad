"""Riding out outages: the object store or Redis gone for a while must not cost a job.

- Store: every S3 call is first retried by botocore (``SJC_S3_RETRY_MODE``, ``SJC_S3_MAX_ATTEMPTS``).
  When an upload, the checkpoint or the resume download still fails (:class:`StoreUnavailable`), the
  job goes back to the queue with exponential backoff (:func:`requeue_after_outage`) without using
  one of its attempts; only after ``MAX_OUTAGE_REQUEUES`` such requeues (about 25 minutes of outage)
  does it fail, with ``store_unavailable`` and a message that names no endpoint or key.
- Redis: progress, preview and stage writes during a run are retried briefly, then skipped
  (:func:`best_effort`): a lost progress event is better than a lost run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from sjc_service.keyspace import outage_key
from sjc_service.queue import TASK_NAME, make_celery
from sjc_service.settings import Settings
from sjc_service.store import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_OUTAGE_REQUEUES = 8
OUTAGE_BACKOFF_S = 15.0
OUTAGE_MAX_BACKOFF_S = 300.0
OUTAGE_TTL_S = 7 * 24 * 3600


def outage_delay(n: int, base_s: float = OUTAGE_BACKOFF_S, cap_s: float = OUTAGE_MAX_BACKOFF_S) -> float:
    """Seconds before the job's ``n``-th requeue after an outage (1, 2, ...) runs: 15, 30, 60 ... 300."""
    return min(cap_s, base_s * 2 ** (n - 1))


def best_effort(fn: Callable[..., T], *args: Any, what: str, tries: int = 3, delay_s: float = 0.2,
                **kwargs: Any) -> T | None:
    """``fn(*args, **kwargs)``, retried ``tries`` times on Redis connection/timeout errors (the delay
    doubling), then logged and skipped: returns ``None`` when it never went through."""
    for attempt in range(tries):
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if attempt == tries - 1:
                log.warning("%s skipped: Redis unavailable (%s)", what, exc)
                return None
            time.sleep(delay_s * 2**attempt)
    return None


def requeue_after_outage(jobs: Any, job_id: str, exc: StoreUnavailable, enqueue: Callable[[str, float], object],
                         max_requeues: int = MAX_OUTAGE_REQUEUES, base_s: float = OUTAGE_BACKOFF_S) -> str:
    """Put a running job whose store calls failed back in the queue, to run again after a backoff.

    The attempt it used is given back (an outage is not the job's fault). Returns ``"requeued"``,
    ``"failed"`` (too many outages in a row) or ``"lost"`` (the job moved on meanwhile).
    """
    n = int(jobs.redis.incr(outage_key(job_id)))
    jobs.redis.expire(outage_key(job_id), OUTAGE_TTL_S)
    if n > max_requeues:
        log.error("job %s: object store unavailable %d times in a row; failing it", job_id, n)
        done = jobs.lifecycle.fail(job_id, "store_unavailable", f"{exc} (after {n} tries over several minutes)")
        return "failed" if done is not None else "lost"
    if jobs.lifecycle.requeue(job_id, lambda _rec: True) is None:
        return "lost"
    jobs.records.apply(job_id, lambda rec: {"attempt": max(0, rec.attempt - 1)})
    delay = outage_delay(n, base_s)
    enqueue(job_id, delay)
    log.warning("job %s: %s; back to the queue in %.0f s (outage %d of %d allowed)", job_id, exc, delay, n,
                max_requeues)
    return "requeued"


def clear_outages(jobs: Any, job_id: str) -> None:
    """The store answered again: the next outage starts the backoff afresh."""
    best_effort(jobs.redis.delete, outage_key(job_id), what=f"job {job_id}: outage counter reset")


def enqueue_later(job_id: str, delay_s: float, settings: Settings) -> str:
    """Send the job's task to the GPU queue, to be run in ``delay_s`` seconds (Celery ``countdown``)."""
    key = settings.model_dump_json()
    if key not in _APPS:
        _APPS[key] = make_celery(settings, main="sjc-requeue")
    result = _APPS[key].send_task(TASK_NAME, args=[job_id], queue=settings.queue_name, countdown=delay_s)
    return str(result.id)


_APPS: dict[str, Any] = {}  # Celery producers by settings, made once per process
