"""The worker's Celery app: the task is registered by name, the parent process stays torch-free."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_task_registered_with_shared_options():
    from worker.celery_app import app
    import worker.tasks  # noqa: F401 - registers the task

    assert "sjc.run_job" in app.tasks
    c = app.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost and c.worker_prefetch_multiplier == 1
    assert c.broker_transport_options["visibility_timeout"] > c.task_time_limit > c.task_soft_time_limit


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_worker_parent_never_loads_torch(worker_process, redis_client):
    """The Celery parent (which forks the pool child) must not load torch, let alone CUDA."""
    maps = Path(f"/proc/{worker_process.proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "libcuda" not in maps
