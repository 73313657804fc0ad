"""The Celery task: thin, takes a job id, and is safe to run twice (see :mod:`worker.runner`)."""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from sjc_service.queue import TASK_NAME
from worker import runner
from worker.celery_app import app


@app.task(name=TASK_NAME, bind=True)
def run_job(self, job_id: str) -> str:
    """Run job ``job_id``; returns what happened (``"succeeded"``, ``"skipped: ..."``, ...)."""
    return runner.run_job(job_id, soft_timeout_exc=(SoftTimeLimitExceeded,))
