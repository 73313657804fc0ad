"""A background thread that keeps a running job's lease alive and watches its cancel flag.

It runs beside the optimiser loop so that long phases (model loading, mesh export, uploads) never
let the lease lapse, and a cancel is seen within ``cancel_poll_s`` whatever the step time.
"""

from __future__ import annotations

import logging
import threading
import time

from sjc_service.jobs import JobStore

log = logging.getLogger(__name__)


class LeaseKeeper(threading.Thread):
    """Renews ``job_id``'s lease every ``ttl / 3`` seconds and polls its cancel flag.

    Attributes:
        cancel: set when a cancel was requested.
        lost: set when another worker took the lease (this worker must stop and write nothing).
    """

    def __init__(self, jobs: JobStore, job_id: str, worker_id: str, ttl: float, cancel_poll_s: float = 1.0) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.jobs, self.job_id, self.worker_id = jobs, job_id, worker_id
        self.ttl = ttl
        self.interval = max(0.05, min(ttl / 3, cancel_poll_s))
        self.renew_every = max(0.05, ttl / 3)
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        last_renew = time.monotonic()
        while not self._done.wait(self.interval):
            try:
                if time.monotonic() - last_renew >= self.renew_every:
                    if not self.jobs.leases.renew(self.job_id, self.worker_id, self.ttl):
                        # expired without a new holder: take it back; held by another worker: we lost it
                        if not self.jobs.leases.acquire(self.job_id, self.worker_id, self.ttl):
                            log.warning("job %s: lease taken by %s; stopping", self.job_id, self.jobs.leases.holder(self.job_id))
                            self.lost.set()
                            return
                    last_renew = time.monotonic()
                if self.jobs.records.cancel_requested(self.job_id):
                    self.cancel.set()
            except Exception:  # noqa: BLE001 - a Redis blip must not kill the job; retry next tick
                log.exception("job %s: lease/cancel check failed", self.job_id)

    @property
    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set()

    def stop(self) -> None:
        self._done.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
