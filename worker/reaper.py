"""Crash recovery: re-enqueue jobs left ``running`` by a worker that died (its lease expired).

Celery alone redelivers such a job only after the broker's visibility timeout (hours, since it must
exceed the time limit) when the whole worker died, e.g. ``kill -9`` or a lost machine. The reaper runs
in every worker's parent process (at start-up, then every ``reaper_interval_s``) and hands those jobs
back to the queue within seconds; the next attempt resumes from the job's last uploaded state.
Meanwhile the API shows such a job as ``requeueing`` (its lease is gone). The parent only talks to
Redis: it never loads a model or touches CUDA.

The parent also renews the leases its own pool children hold (:func:`renew_children_leases`): a child
busy in native code that keeps the GIL for long (xatlas' chart packing takes tens of seconds) cannot
run its own lease thread, but it is alive, and its parent, which never runs such code, can vouch for it.
A child that dies, or a whole worker that dies, stops being vouched for and its job is requeued.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

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


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (from ``/proc``; ``None`` where there is none or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid, ...


def renew_children_leases(jobs: JobStore, ttl: float, parent_pid: int | None = None,
                          host: str | None = None) -> list[str]:
    """Renew for ``ttl`` seconds every running job's lease held by a live child of this process
    (lease holder ``"{host}:{pid}"``, see :class:`worker.context.WorkerContext`); returns their ids."""
    parent_pid = os.getpid() if parent_pid is None else parent_pid
    host = socket.gethostname() if host is None else host
    renewed: list[str] = []
    for job_id in jobs.indexes.running_ids():
        holder = jobs.leases.holder(job_id)
        if holder is None or holder.rpartition(":")[0] != host:
            continue
        pid = holder.rpartition(":")[2]
        if pid.isdigit() and parent_of(int(pid)) == parent_pid and jobs.leases.renew(job_id, holder, ttl):
            renewed.append(job_id)
    return renewed


class Reaper(threading.Thread):
    """Every ``interval`` seconds: renews the leases of this worker's own busy children
    (:func:`renew_children_leases`, for ``lease_ttl_s``), then runs :func:`reap_expired`."""

    def __init__(self, jobs: JobStore, enqueue: Callable[[str], object], interval: float, grace_s: float,
                 lease_ttl_s: float | None = None) -> None:
        super().__init__(name="sjc-reaper", daemon=True)
        self.jobs, self.enqueue = jobs, enqueue
        self.interval, self.grace_s = interval, grace_s
        self.lease_ttl_s = grace_s if lease_ttl_s is None else lease_ttl_s
        self._done = threading.Event()

    def tick(self) -> list[str]:
        renew_children_leases(self.jobs, self.lease_ttl_s)
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
