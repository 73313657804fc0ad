"""Webhooks end to end: API, a real webhook Celery worker on its own queue, a receiver that verifies signatures.

The job's transitions are written the way the service writes them (a ``state`` event on each status
change, ``done`` at the end, in the job's stream); no GPU worker runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sjc_service.events import xadd_event
from tests.api.conftest import auth
from tests.fixtures.service import API_KEYS, ServiceProcess, _spawn, wait_until
from tests.service.webhook_receiver import Receiver

FAST = {"SJC_WEBHOOK_ALLOW_PRIVATE_TARGETS": "1", "SJC_WEBHOOK_BACKOFF_S": "0.5", "SJC_WEBHOOK_WATCH_INTERVAL_S": "0.1"}


@pytest.fixture
def hook_client(api_settings) -> Iterator[TestClient]:
    """The API with loopback webhook targets allowed (the receiver runs on 127.0.0.1)."""
    from api.main import create_app

    with TestClient(create_app(api_settings.model_copy(update={"webhook_allow_private_targets": True}))) as c:
        yield c


@pytest.fixture
def webhook_worker(service_env, tmp_path) -> Iterator[ServiceProcess]:
    """``celery -A worker.webhooks worker -Q webhooks``: the webhook queue only."""
    cmd = [sys.executable, "-m", "celery", "-A", "worker.webhooks", "worker", "-Q", "webhooks", "-c", "2",
           "-n", "hooks@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    sp = _spawn("webhooks", cmd, {**service_env, **FAST}, tmp_path / "logs")

    def ready() -> bool:
        if not sp.alive():
            raise RuntimeError(f"webhook worker exited:\n{sp.log()}")
        return "sjc webhook worker ready" in sp.log(100_000)

    wait_until(ready, 60, interval=0.1, what="webhook worker")
    yield sp
    sp.stop()


def test_signed_deliveries_retried_with_backoff_and_visible_on_the_job(hook_client, webhook_worker):
    client, services = hook_client, hook_client.app.state.services
    secret = client.get("/v1/webhook-secret", headers=auth()).json()["secret"]
    assert secret.startswith("whsec_") and client.get("/v1/webhook-secret", headers=auth()).json()["secret"] == secret
    receiver = Receiver(secret=secret, fail_first=2).start()
    try:
        r = client.post("/v1/jobs", json={"prompt": "a red cube", "webhook_url": receiver.url,
                                          "webhook_events": ["started", "completed"]}, headers=auth())
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert "webhook_url" not in r.json()["params"]  # delivery, not a run setting
        assert r.json()["links"]["webhook_deliveries"] == f"/v1/jobs/{job_id}/webhook-deliveries"
        xadd_event(services.redis, job_id, "state", {"id": job_id, "status": "running", "stage": "loading_model"})
        xadd_event(services.redis, job_id, "done", {"id": job_id, "status": "succeeded", "progress": 100.0})
        wait_until(lambda: len(receiver.accepted()) == 2, 60, what="two accepted deliveries")
        assert all(r.verified for r in receiver.requests), [r.headers for r in receiver.requests]
        by_type = {r.body["type"]: r for r in receiver.accepted()}
        assert set(by_type) == {"job.started", "job.completed"}
        assert by_type["job.completed"].body["data"]["status"] == "succeeded"
        assert by_type["job.completed"].body["data"]["id"] == job_id
        assert len(receiver.requests) == 6  # each event: two 500s, then 204, same webhook-id every time
        seen = client.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth()).json()
        assert seen["url"] == receiver.url and seen["events"] == ["completed", "started"]
        completed = [d for d in seen["deliveries"] if d["event"] == "completed"]
        assert [(d["attempt"], d["status_code"], d["delivered"]) for d in completed] == [
            (1, 500, False), (2, 500, False), (3, 204, True)]
        assert completed[0]["next_attempt_in_s"] == 0.5 and completed[1]["next_attempt_in_s"] == 1.0
        other = client.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth("bob"))
        assert other.status_code == 404
    finally:
        receiver.stop()


def test_event_filter_sends_only_what_was_asked(hook_client, webhook_worker):
    client = hook_client
    secret = client.get("/v1/webhook-secret", headers=auth()).json()["secret"]
    receiver = Receiver(secret=secret).start()
    try:
        job_id = client.post("/v1/jobs", json={"prompt": "a red cube", "webhook_url": receiver.url,
                                               "webhook_events": ["completed"]}, headers=auth()).json()["id"]
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth())  # a queued job: canceled at once
        wait_until(lambda: receiver.accepted(), 60, what="the completed delivery")
        time.sleep(1.0)  # let a wrongly sent "started" arrive, if there were one
        assert [r.body["type"] for r in receiver.requests] == ["job.completed"]
        assert receiver.requests[0].body["data"]["status"] == "canceled" and receiver.requests[0].verified
    finally:
        receiver.stop()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/", "file:///etc/passwd"])
def test_private_targets_are_refused_by_default(client, services, url):
    r = client.post("/v1/jobs", json={"prompt": "a red cube", "webhook_url": url}, headers=auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "webhook_url", r.text
    assert list(services.redis.scan_iter("sjc:job:*")) == []


def test_unknown_webhook_event_is_refused(client):
    r = client.post("/v1/jobs", json={"prompt": "a red cube", "webhook_url": "http://example.com/h",
                                      "webhook_events": ["exploded"]}, headers=auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "webhook_events.0"


@pytest.fixture
def service_env(service_env):
    """The service processes' environment with loopback webhook targets and short backoffs."""
    return {**service_env, **FAST}


@pytest.mark.slow
def test_a_real_run_sends_started_then_completed(api_server, worker_process, webhook_worker):
    import httpx

    headers = {"Authorization": f"Bearer {API_KEYS['alice']}"}
    secret = httpx.get(api_server.url + "/v1/webhook-secret", headers=headers).json()["secret"]
    receiver = Receiver(secret=secret).start()
    try:
        body = {"prompt": "a red cube", "steps": 4, "grid_size": 12, "video_frames": 2, "preview_every": 2,
                "outputs": ["checkpoint", "video"], "webhook_url": receiver.url}
        r = httpx.post(api_server.url + "/v1/jobs", json=body, headers=headers)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_until(lambda: len(receiver.accepted()) == 2, 240, interval=0.2, what="started and completed")
        assert [x.body["type"] for x in receiver.accepted()] == ["job.started", "job.completed"]
        assert all(x.verified for x in receiver.requests)
        done = receiver.accepted()[1].body["data"]
        assert done["id"] == job_id and done["status"] == "succeeded"
        assert httpx.get(f"{api_server.url}/v1/jobs/{job_id}", headers=headers).json()["status"] == "succeeded"
    finally:
        receiver.stop()
