"""The API under uvicorn (a real socket): events arrive while the job runs, and a dropped
connection resumes with Last-Event-ID without losing or repeating events."""

from __future__ import annotations

import json

import httpx
import pytest

from sjc_service.events import EventStream
from sjc_service.jobs import JobStore
from tests.api.conftest import auth, finish_job, start_job
from tests.fixtures.service import start_api


@pytest.fixture
def live_api(api_settings, tmp_path):
    env = {"PYTHONPATH": ".", "PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    for name, value in api_settings.model_dump(mode="json").items():
        if value is not None:
            env[f"SJC_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    env["SJC_SIGNING_SECRET"] = "test-signing-secret"
    env["SJC_S3_SECRET_ACCESS_KEY"] = "testing"
    sp = start_api(env, tmp_path / "logs")
    yield sp
    sp.stop()


def read_events(lines, n: int) -> list[tuple[str, str]]:
    """The next ``n`` events as ``(id, event)`` from an SSE line iterator."""
    out, fields = [], {}
    for line in lines:
        if line == "" and "event" in fields:
            out.append((fields.get("id"), fields["event"]))
            fields = {}
            if len(out) == n:
                return out
        elif ": " in line and not line.startswith(":"):
            key, value = line.split(": ", 1)
            fields[key] = value
    return out


def test_live_stream_and_resume_over_http(live_api, redis_client):
    jobs, events = JobStore(redis_client), EventStream(redis_client)
    base = live_api.url
    job_id = httpx.post(base + "/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
    start_job(jobs, job_id)
    with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", headers=auth(), timeout=10) as r:
        lines = r.iter_lines()
        first = read_events(lines, 3)  # the three state events so far
        assert [e for _, e in first] == ["state", "state", "state"]  # queued, loading_model, optimizing
        events.publish(job_id, "progress", {"step": 1, "total": 2})  # published while connected
        assert read_events(lines, 1)[0][1] == "progress"
        last_seen = first[-1][0]
    events.publish(job_id, "progress", {"step": 2, "total": 2})  # missed while disconnected
    finish_job(jobs, job_id)
    with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", timeout=10,
                      headers={**auth(), "Last-Event-ID": last_seen}) as r:
        rest = read_events(r.iter_lines(), 10)
    assert [e for _, e in rest] == ["progress", "progress", "state", "state", "state", "done"]  # exporting, uploading, succeeded
    assert httpx.get(base + "/readyz").status_code == 200
