"""Crash recovery: re-enqueue jobs left ``running`` by a worker that died (its lease expired).

Celery alone redelivers such a job only after the broker's visibility timeout (hours, since it must
exceed the time limit) when the whole worker died, e.g. ``kill -9`` or a lost machine. The reaper runs
in every worker's parent process (at start-up, then every ``reaper_interval_s``) and hands those jobs
back to the queue within seconds; the next attempt resumes from the job's last uploaded state.
Meanwhile the API shows such a job as ``requeueing`` (its lease is gone). The parent only talks to
Redis: it never loads a model or touches CUDA.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sjc_service.jobs import JobStore

log = logging.getLogger(__name__)


def reap_expired(jobs: JobStore, enqueue: Callable[[str], object], grace_s: float) -> list[str]:
    """Requeue every running job without a live lease, not updated for ``grace_s``; returns their ids."""
    requeued: list[str] = []
    stale = jobs.lifecycle.stale(grace_s)
    for job_id in jobs.indexes.running_ids():
        if jobs.leases.alive(job_id):
            continue
        if jobs.lifecycle.requeue(job_id, lambda rec: stale(rec) and not jobs.leases.alive(job_id)) is not None:
            enqueue(job_id)
            requeued.append(job_id)
            log.warning("job %s: its worker stopped renewing the lease; re-enqueued", job_id)
    return requeued


class Reaper(threading.Thread):
    """Runs :func:`reap_expired` every ``interval`` seconds."""

    def __init__(self, jobs: JobStore, enqueue: Callable[[str], object], interval: float, grace_s: float) -> None:
        super().__init__(name="sjc-reaper", daemon=True)
        self.jobs, self.enqueue = jobs, enqueue
        self.interval, self.grace_s = interval, grace_s
        self._done = threading.Event()

    def tick(self) -> list[str]:
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
