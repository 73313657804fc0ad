"""DELETE /v1/jobs/{id} and the retention sweep, on the real app, redis-server and moto's S3 server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sjc_service import webhooks
from sjc_service.retention import PENDING_KEY, sweep
from tests.api.conftest import auth


def _job(client, services, files: tuple[str, ...] = ("mesh.glb", "previews/step_000001.png")) -> str:
    job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
    for name in files:
        services.store.put_bytes(f"jobs/{job_id}/{name}", b"x" * 10, "application/octet-stream")
    return job_id


def _finish(services, job_id: str) -> None:
    """What a worker does: start, then stop on the cancel (the job ends canceled)."""
    services.jobs.lifecycle.start(job_id, max_attempts=3)
    services.jobs.lifecycle.request_cancel(job_id)
    services.jobs.lifecycle.stop(job_id, [])


def test_delete_a_finished_job_removes_files_record_and_is_repeatable(client, services):
    job_id = _job(client, services)
    services.jobs.lifecycle.request_cancel(job_id)  # queued: canceled at once
    webhooks.register(services.redis, job_id, "alice", "http://example.com/h", ["completed"])
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth("bob")).status_code == 404
    r = client.delete(f"/v1/jobs/{job_id}", headers=auth())
    assert r.status_code == 204, r.text
    assert services.store.list(f"jobs/{job_id}/") == []
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).status_code == 404
    assert [k for k in services.redis.scan_iter(f"sjc:job:{job_id}*")] == []
    assert job_id not in [j["id"] for j in client.get("/v1/jobs", headers=auth()).json()["items"]]
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth()).status_code == 204  # idempotent
    assert client.delete("/v1/jobs/nope", headers=auth()).status_code == 404


def test_delete_a_queued_job_cancels_and_deletes_it(client, services):
    job_id = _job(client, services)
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth()).status_code == 204
    assert services.jobs.get(job_id) is None and services.store.list(f"jobs/{job_id}/") == []
    assert client.get("/v1/jobs", params={"status": "canceled"}, headers=auth()).json()["items"] == []


def test_delete_a_running_job_cancels_it_and_the_sweep_deletes_it_once_stopped(client, services):
    job_id = _job(client, services)
    services.jobs.lifecycle.start(job_id, max_attempts=3)
    r = client.delete(f"/v1/jobs/{job_id}", headers=auth())
    assert r.status_code == 202
    rec = services.jobs.get(job_id)
    assert rec is not None and rec.cancel_requested and job_id in services.redis.smembers(PENDING_KEY)
    assert sweep(services.jobs, services.store, None) == []  # still running: kept
    services.jobs.lifecycle.stop(job_id, [])  # its worker stops
    assert sweep(services.jobs, services.store, None) == [job_id]
    assert services.jobs.get(job_id) is None and services.store.list(f"jobs/{job_id}/") == []


def test_retention_sweep_deletes_only_jobs_finished_longer_ago(client, services):
    old, recent = _job(client, services), _job(client, services)
    running = _job(client, services)
    for job_id in (old, recent):
        _finish(services, job_id)
    services.jobs.lifecycle.start(running, max_attempts=3)
    week = 7 * 86400
    later = datetime.now(timezone.utc) + timedelta(seconds=week + 60)
    services.jobs.records.apply(recent, lambda rec: {"finished_at": later - timedelta(days=1)})
    assert sweep(services.jobs, services.store, week, now=later) == [old]
    assert services.jobs.get(old) is None and services.store.list(f"jobs/{old}/") == []
    assert services.jobs.get(recent) is not None and services.store.list(f"jobs/{recent}/") != []
    assert services.jobs.get(running) is not None
