"""Crash recovery: re-enqueue jobs left ``running`` by a worker that died (its lease expired).

Celery alone redelivers such a job only after the broker's visibility timeout (hours, since it must
exceed the time limit) when the whole worker died, e.g. ``kill -9`` or a lost machine. The reaper runs
in every worker's parent process (at start-up, then every ``reaper_interval_s``) and hands those jobs
back to the queue within seconds; the next attempt resumes from the job's last uploaded state.
The parent only talks to Redis: it never loads a model or touches CUDA.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sjc_service.jobs import JobStore, utcnow
from sjc_service.schemas import JobRecord, JobStatus

log = logging.getLogger(__name__)
WORKERS_KEY = "sjc:workers"


def reap_expired(jobs: JobStore, enqueue: Callable[[str], object], grace_s: float) -> list[str]:
    """Requeue every running job without a live lease, not updated for ``grace_s``; returns their ids."""
    requeued: list[str] = []
    for job_id in jobs.running_ids():
        if jobs.lease_alive(job_id):
            continue

        def change(rec: JobRecord) -> dict | None:
            if jobs.lease_alive(job_id) or utcnow() - rec.updated_at < timedelta(seconds=grace_s):
                return None
            return {"status": JobStatus.queued, "stage": "requeued", "eta_s": None}

        if jobs.transition_with(job_id, {JobStatus.running}, change) is not None:
            enqueue(job_id)
            requeued.append(job_id)
            log.warning("job %s: its worker stopped renewing the lease; re-enqueued", job_id)
    return requeued


class Reaper(threading.Thread):
    """Runs :func:`reap_expired` and writes this worker's heartbeat every ``interval`` seconds."""

    def __init__(self, jobs: JobStore, enqueue: Callable[[str], object], worker_name: str,
                 interval: float, grace_s: float) -> None:
        super().__init__(name="sjc-reaper", daemon=True)
        self.jobs, self.enqueue, self.worker_name = jobs, enqueue, worker_name
        self.interval, self.grace_s = interval, grace_s
        self._done = threading.Event()

    def tick(self) -> list[str]:
        self.jobs.redis.hset(WORKERS_KEY, self.worker_name, f"{time.time():.3f}")
        return reap_expired(self.jobs, self.enqueue, self.grace_s)

    def run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep reaping after a Redis blip
                log.exception("reaper tick failed")
            if self._done.wait(self.interval):
                return

    def stop(self) -> None:
        self._done.set()
        try:
            self.jobs.redis.hdel(WORKERS_KEY, self.worker_name)
        except Exception:  # noqa: BLE001
            pass
