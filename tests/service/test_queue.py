"""enqueue_job puts a task message named sjc.run_job on the GPU queue in the real Redis broker."""

from __future__ import annotations

import base64
import json

from sjc_service.queue import TASK_NAME, enqueue_job, make_celery
from sjc_service.settings import Settings


def test_enqueue_lands_on_gpu_queue(redis_url, redis_client):
    app = make_celery(Settings(redis_url=redis_url, queue_name="gpu"))
    task_id = enqueue_job(app, "job123")
    raw = redis_client.lrange("gpu", 0, -1)  # kombu's Redis transport: one list per queue
    assert len(raw) == 1
    msg = json.loads(raw[0])
    assert msg["headers"]["task"] == TASK_NAME and msg["headers"]["id"] == task_id
    args, _kwargs, _embed = json.loads(base64.b64decode(msg["body"]))
    assert args == ["job123"]
