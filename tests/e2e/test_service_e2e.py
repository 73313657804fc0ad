"""End to end: the API (uvicorn), a Celery worker process, a real redis-server and moto's S3 server.

A prompt goes in through ``POST /v1/jobs``; a GLB comes out through its presigned URL; the SSE stream
shows the job's progress in order. Cancel works while queued and while running; a worker killed
with SIGKILL mid-run is replaced and the job resumes from its last uploaded state.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.fixtures.service import (
    API_KEYS,
    ServiceProcess,
    make_service_env,
    start_api,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {API_KEYS['alice']}"}
# small enough for 2 CPU cores: a few steps on a small grid, a 4-frame video
FAST = {"prompt": "a red sphere", "seed": 7, "grid_size": 24, "video_frames": 4, "preview_every": 3}
MEASURED: dict[str, float] = {}  # steps per second seen by the first test, to size the crash test's job


@dataclass
class Stack:
    api: ServiceProcess
    worker: ServiceProcess
    env: dict[str, str]
    log_dir: object
    mesh_threshold: float  # low enough that a few steps leave a surface to export

    @property
    def url(self) -> str:
        return self.api.url  # type: ignore[return-value]

    def store(self):
        from sjc_service.store import S3Store

        return S3Store(self.env["SJC_S3_BUCKET"], endpoint_url=self.env["SJC_S3_ENDPOINT_URL"],
                       access_key_id="testing", secret_access_key="testing")


@pytest.fixture(scope="module")
def stack(redis_server, moto_server, service_model, tmp_path_factory) -> Iterator[Stack]:
    import redis

    from sjc_service.store import S3Store

    redis_url = redis_server + "/3"
    redis.Redis.from_url(redis_url).flushdb()
    bucket = f"sjc-e2e-{uuid.uuid4().hex[:8]}"
    S3Store(bucket, endpoint_url=moto_server, access_key_id="testing", secret_access_key="testing").ensure_bucket()
    root = tmp_path_factory.mktemp("e2e")
    env = make_service_env(redis_url, moto_server, bucket, service_model, root)
    api = start_api(env, root / "logs")
    worker = start_worker(env, root / "logs")
    s = Stack(api, worker, env, root / "logs", service_model.short_run_mesh_threshold)
    yield s
    for proc in (s.worker, s.api):
        proc.stop()


def _post(stack: Stack, **params) -> dict:
    body = {**FAST, "mesh_threshold": stack.mesh_threshold, **params}
    r = httpx.post(stack.url + "/v1/jobs", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()


def _get(stack: Stack, job_id: str) -> dict:
    r = httpx.get(f"{stack.url}/v1/jobs/{job_id}", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_status(stack: Stack, job_id: str, statuses: set[str], timeout: float) -> dict:
    def done():
        rec = _get(stack, job_id)
        return rec if rec["status"] in statuses else None

    try:
        return wait_until(done, timeout, interval=0.2, what=f"job {job_id} to reach {statuses}")
    except TimeoutError:
        print(stack.worker.log())
        raise


def _sse(stack: Stack, job_id: str, last_event_id: str | None = None, timeout: float = 120) -> list[tuple[str, str, dict]]:
    """Read the job's SSE stream to its end; returns ``(id, event, data)`` in arrival order."""
    headers = dict(AUTH)
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    events: list[tuple[str, str, dict]] = []
    cur: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{stack.url}/v1/jobs/{job_id}/events", headers=headers,
                      timeout=httpx.Timeout(30, read=30)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            assert time.monotonic() < deadline, f"SSE stream still open after {timeout}s: {events[-3:]}"
            if line == "":
                if "event" in cur:
                    events.append((cur.get("id", ""), cur["event"], json.loads(cur.get("data", "null"))))
                cur = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            cur[key] = value.lstrip(" ")
    return events


def test_prompt_to_glb_with_ordered_progress(stack):
    import trimesh

    job = _post(stack, steps=6)
    assert job["status"] == "queued" and job["params"]["seed"] == 7
    events = _sse(stack, job["id"])
    kinds = [e for _, e, _ in events]
    assert kinds[-1] == "done" and events[-1][2]["status"] == "succeeded", events[-3:]
    statuses = [d["status"] for _, e, d in events if e == "state"]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded"
    steps = [d["step"] for _, e, d in events if e == "progress"]
    assert steps and steps == sorted(set(steps)) and steps[-1] == 6, steps
    MEASURED["steps_per_s"] = max(d["steps_per_s"] for _, e, d in events if e == "progress")
    progress = [d["progress"] for _, e, d in events if e == "progress"]
    assert progress == sorted(progress) and all(0 < p <= 100 for p in progress)
    ids = [i for i, _, _ in events]
    assert all(ids) and ids == sorted(ids, key=lambda s: tuple(int(x) for x in s.split("-")))

    # Last-Event-ID resumes right after the given event
    tail = _sse(stack, job["id"], last_event_id=ids[-3])
    assert [i for i, _, _ in tail] == ids[-2:]

    rec = _get(stack, job["id"])
    assert rec["status"] == "succeeded" and rec["progress"] == 100 and rec["attempt"] == 1
    r = httpx.get(f"{stack.url}/v1/jobs/{job['id']}/artifacts", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    listing = r.json()
    arts = {a["name"]: a for a in listing["artifacts"]}
    assert listing["complete"] and {"mesh.glb", "mesh.obj", "mesh.ply", "turntable.mp4", "field.pt",
                                    "manifest.json"} <= set(arts)
    glb = httpx.get(arts["mesh.glb"]["url"], timeout=30)
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    mesh = trimesh.load(io.BytesIO(glb.content), file_type="glb", force="mesh")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    video = httpx.get(arts["turntable.mp4"]["url"], timeout=30)
    assert video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"


def test_cancel_queued_and_running(stack):
    long = _post(stack, steps=5000, preview_every=0)
    _wait_status(stack, long["id"], {"running"}, 90)
    wait_until(lambda: _get(stack, long["id"])["step"] >= 6, 90, interval=0.2, what="6 steps")

    queued = _post(stack, steps=5)
    assert _get(stack, queued["id"])["status"] == "queued"
    r = httpx.post(f"{stack.url}/v1/jobs/{queued['id']}/cancel", headers=AUTH, timeout=30)
    assert r.status_code == 202 and r.json()["status"] == "canceled"

    t0 = time.monotonic()
    r = httpx.post(f"{stack.url}/v1/jobs/{long['id']}/cancel", headers=AUTH, timeout=30)
    assert r.status_code == 202 and r.json()["status"] == "running"  # it stops at its next check
    rec = _wait_status(stack, long["id"], {"canceled", "failed", "succeeded"}, 30)
    assert rec["status"] == "canceled" and time.monotonic() - t0 < 10
    assert 6 <= rec["step"] < 5000
    store = stack.store()
    assert store.head(f"jobs/{long['id']}/resume/state.pt") is not None  # it keeps what it made
    assert store.head(f"jobs/{long['id']}/field.pt") is not None

    # the canceled queued job is never run, even though its message reaches the worker
    time.sleep(2)
    q = _get(stack, queued["id"])
    assert q["status"] == "canceled" and q["attempt"] == 0 and q["started_at"] is None
    assert store.list(f"jobs/{queued['id']}/") == []
    r = httpx.post(f"{stack.url}/v1/jobs/{long['id']}/cancel", headers=AUTH, timeout=30)
    assert r.status_code == 409 and r.json()["status_now"] == "canceled"  # finished: 409, as documented


def test_worker_killed_mid_run_is_resumed_by_a_new_worker(stack):
    # about 6 s of work at the speed seen so far, so the kill lands mid-run and the rest stays short
    total = int(min(400, max(40, 6 * MEASURED.get("steps_per_s", 10))))
    job = _post(stack, steps=total, preview_every=0)
    store = stack.store()
    state_key = f"jobs/{job['id']}/resume/state.pt"
    # the record's step follows progress events (at most one per SJC_PROGRESS_INTERVAL_S), so it may still show a
    # step before the uploaded state's: wait for both
    wait_until(lambda: store.head(state_key) is not None and _get(stack, job["id"])["step"] >= 5, 120, interval=0.2,
               what="a first uploaded state, and the record past it")
    before = _get(stack, job["id"])
    assert before["status"] == "running" and 5 <= before["step"] < total, before
    stack.worker.kill9()  # parent and pool child at once: no chance to clean up
    # once its lease lapses the job no longer shows running with a stale step, though nobody requeued it yet
    lost = wait_until(lambda: (j := _get(stack, job["id"]))["stage"] == "requeueing" and j, 30, interval=0.2,
                      what="the lost job shown as requeueing")
    assert lost["status"] == "queued" and lost["eta_s"] is None and lost["step"] >= before["step"]

    stack.worker = start_worker(stack.env, stack.log_dir)
    rec = _wait_status(stack, job["id"], {"succeeded", "failed", "canceled"}, 150)
    assert rec["status"] == "succeeded", rec
    assert rec["attempt"] == 2 and rec["resumed_from_step"] is not None and rec["resumed_from_step"] >= 5
    events = _sse(stack, job["id"])
    states = [d for _, e, d in events if e == "state"]
    assert any(d["stage"] == "requeued" for d in states)
    progress = [d["step"] for _, e, d in events if e == "progress"]
    # the steps replayed from the checkpoint are not reported again: the step never goes back
    assert progress == sorted(progress) and len(set(progress)) == len(progress) and progress[-1] == total
    assert [d["step"] for d in states] == sorted(d["step"] for d in states)
    manifest = json.loads(store.get_bytes(f"jobs/{job['id']}/manifest.json"))
    assert manifest["steps_done"] == total and manifest["attempt"] == 2
