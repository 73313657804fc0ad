"""An event stream rides out a Redis restart: events before and after arrive on one connection, in order."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sjc_service.events import xadd_event
from tests.api.conftest import auth
from tests.api.test_events import parse_sse
from tests.fixtures.service import ServiceProcess, _spawn, free_port, wait_until


def start_redis(port: int, data_dir) -> ServiceProcess:
    """A redis-server with AOF in ``data_dir`` (a restart keeps the data)."""
    import redis

    exe = os.environ.get("SJC_TEST_REDIS_SERVER", "redis-server")
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
           "--appendfsync", "always", "--dir", str(data_dir), "--protected-mode", "no"]
    sp = _spawn("redis-private", cmd, dict(os.environ), data_dir)
    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(up, 15, what="private redis-server")
    return sp


@pytest.fixture
def private_redis(tmp_path, redis_server) -> Iterator[tuple[int, list[ServiceProcess]]]:
    port = free_port()
    procs = [start_redis(port, tmp_path)]
    yield port, procs
    for sp in procs:
        sp.stop()


def test_stream_survives_a_redis_restart(api_settings, private_redis, tmp_path):
    from api.main import create_app

    port, procs = private_redis
    settings = api_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    with TestClient(create_app(settings, sse_heartbeat_s=0.3)) as client:
        services = client.app.state.services
        job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
        xadd_event(services.redis, job_id, "progress", {"step": 1, "total": 2})
        body: list[str] = []

        def read() -> None:
            with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth()) as r:
                for text in r.iter_text():
                    body.append(text)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_until(lambda: '"step": 1' in "".join(body), 20, what="the first event")
        procs[0].stop()  # Redis goes away...
        wait_until(lambda: "waiting for the event store" in "".join(body), 20, what="the stream noticing")
        procs.append(start_redis(port, tmp_path))  # ...and comes back with its data
        wait_until(lambda: _ping(services), 20, what="the app's client reconnecting")
        xadd_event(services.redis, job_id, "progress", {"step": 2, "total": 2})
        services.jobs.lifecycle.request_cancel(job_id)  # queued: canceled at once, "done" follows
        reader.join(timeout=30)
    events, _ = parse_sse("".join(body))
    assert [e["data"].get("step") for e in events if e["event"] == "progress"] == [1, 2]
    assert events[-1]["event"] == "done" and events[-1]["data"]["status"] == "canceled"


def _ping(services) -> bool:
    import redis

    try:
        return bool(services.redis.ping())
    except redis.ConnectionError:
        return False
