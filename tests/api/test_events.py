"""GET /v1/jobs/{id}/events: SSE from the job's Redis stream, resumable with Last-Event-ID."""

from __future__ import annotations

import json
import threading
import time

from tests.api.conftest import auth, finish_job, start_job


def parse_sse(text: str) -> tuple[list[dict], int]:
    """Events as ``{"id", "event", "data"}`` and the number of heartbeat comments."""
    events, beats = [], 0
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln]
        beats += sum(ln.startswith(":") for ln in lines)
        fields = dict(ln.split(": ", 1) for ln in lines if not ln.startswith(":") and ": " in ln)
        if "event" in fields:
            events.append({"id": fields.get("id"), "event": fields["event"], "data": json.loads(fields["data"])})
    return events, beats


def run_job(services, job_id: str, steps: int = 3) -> None:
    """What a worker does: running, progress events, succeeded."""
    start_job(services.jobs, job_id)
    for step in range(1, steps + 1):
        services.events.publish(job_id, "progress", {"step": step, "total": steps, "progress": 100 * step / steps})
    finish_job(services.jobs, job_id)


def test_events_stream_ends_after_done_and_resumes_from_last_event_id(client, services):
    job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
    run_job(services, job_id)
    r = client.get(f"/v1/jobs/{job_id}/events", headers=auth())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events, _ = parse_sse(r.text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "state" and kinds[-1] == "done" and kinds.count("progress") == 3
    assert all(e["id"] for e in events) and events[-1]["data"]["status"] == "succeeded"
    assert [e["data"]["step"] for e in events if e["event"] == "progress"] == [1, 2, 3]
    # reconnect after the second progress event: exactly the rest, same ids
    cut = next(i for i, e in enumerate(events) if e["event"] == "progress" and e["data"]["step"] == 2)
    r = client.get(f"/v1/jobs/{job_id}/events", headers={**auth(), "Last-Event-ID": events[cut]["id"]})
    rest, _ = parse_sse(r.text)
    assert [e["id"] for e in rest] == [e["id"] for e in events[cut + 1:]]
    r = client.get(f"/v1/jobs/{job_id}/events", params={"last_event_id": events[-1]["id"]}, headers=auth())
    tail, _ = parse_sse(r.text)
    assert [e["event"] for e in tail] == ["done"] and tail[0]["id"] is None  # finished: the final record once more
    bad = client.get(f"/v1/jobs/{job_id}/events", headers={**auth(), "Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "Last-Event-ID"


def test_idle_stream_gets_heartbeats_until_the_job_ends(client, services):
    job_id = client.post("/v1/jobs", json={"prompt": "a blue torus"}, headers=auth()).json()["id"]

    def cancel_later() -> None:
        time.sleep(1.2)  # heartbeats every 0.3 s in these tests
        services.jobs.lifecycle.request_cancel(job_id)

    threading.Thread(target=cancel_later, daemon=True).start()
    t0 = time.monotonic()
    r = client.get(f"/v1/jobs/{job_id}/events", headers=auth())
    events, beats = parse_sse(r.text)
    assert time.monotonic() - t0 >= 1.0
    assert beats >= 2, r.text
    assert [e["event"] for e in events][-2:] == ["state", "done"] and events[-1]["data"]["status"] == "canceled"
