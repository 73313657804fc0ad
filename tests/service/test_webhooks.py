"""Webhook pieces on a real redis-server and a real local HTTP receiver: targets, signatures, attempts, watch."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from sjc_service import webhooks
from sjc_service.events import xadd_event
from sjc_service.webhook_watch import watch_once
from sjc_service.webhooks import Delivery, TargetRefused, WebhookSettings, attempt_delivery, check_target
from tests.service.webhook_receiver import Receiver


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.1.2.3/hook", "http://192.168.0.5/x",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/hook", "http://[fe80::1]/hook", "http://0.0.0.0/",
    "http://224.0.0.1/", "ftp://example.com/hook", "http:///nohost", "http://user:pw@example.com/",
])
def test_private_loopback_link_local_and_odd_targets_are_refused(url):
    with pytest.raises(TargetRefused):
        check_target(url)


def test_loopback_is_allowed_when_the_setting_says_so():
    assert check_target("http://127.0.0.1:9/hook", allow_private=True) == "http://127.0.0.1:9/hook"
    assert check_target("http://93.184.215.14/hook") == "http://93.184.215.14/hook"  # a public literal address


def test_backoff_doubles_and_covers_more_than_an_hour_by_default():
    from sjc_service.settings import Settings

    s = WebhookSettings.from_settings(Settings())
    delays = [s.delay_before(a) for a in range(2, s.max_attempts + 1)]
    assert delays[:3] == [30.0, 60.0, 120.0] and max(delays) == s.max_backoff_s
    assert sum(delays) >= 3600, sum(delays)


def test_secret_is_per_owner_and_signs_verifiable_headers(redis_client):
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    alice = webhooks.secret_for(redis_client, "alice")
    assert alice.startswith("whsec_") and webhooks.secret_for(redis_client, "alice") == alice
    assert webhooks.secret_for(redis_client, "bob") != alice
    body = '{"type":"job.completed"}'
    headers = webhooks.signed_headers(alice, "msg_1", body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(alice).verify(body, headers) == {"type": "job.completed"}
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.secret_for(redis_client, "bob")).verify(body, headers)
    old = webhooks.signed_headers(alice, "msg_1", body, now=datetime.now(timezone.utc) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):
        Webhook(alice).verify(body, old)
    assert webhooks.rotate_secret(redis_client, "alice") != alice


def test_attempts_are_recorded_until_the_receiver_accepts(redis_client):
    receiver = Receiver(secret=webhooks.secret_for(redis_client, "alice"), fail_first=2).start()
    try:
        webhooks.register(redis_client, "job1", "alice", receiver.url, ["completed"])
        settings = WebhookSettings(allow_private_targets=True, backoff_s=1, max_attempts=4)
        delivery = webhooks.make_delivery("job1", "completed", {"id": "job1", "status": "succeeded"})
        delays = []
        for attempt in (1, 2, 3):
            delays.append(attempt_delivery(redis_client, Delivery(**{**delivery.__dict__, "attempt": attempt}),
                                           settings))
        assert delays == [1.0, 2.0, None]
        log = webhooks.deliveries(redis_client, "job1")
        assert [(d["attempt"], d["status_code"], d["delivered"]) for d in log] == [(1, 500, False), (2, 500, False),
                                                                                  (3, 204, True)]
        assert all(r.verified for r in receiver.requests)
        assert {r.webhook_id for r in receiver.requests} == {"msg_job1_completed"}
    finally:
        receiver.stop()


def test_a_refused_target_is_an_attempt_that_says_why(redis_client):
    webhooks.register(redis_client, "job2", "alice", "http://127.0.0.1:9/hook", ["completed"])
    delivery = webhooks.make_delivery("job2", "completed", {"id": "job2"})
    assert attempt_delivery(redis_client, delivery, WebhookSettings(max_attempts=1)) is None
    (record,) = webhooks.deliveries(redis_client, "job2")
    assert record["delivered"] is False and record["error"].startswith("target refused")


def test_watch_turns_events_into_filtered_deliveries_once(redis_client):
    redis_client.hset("sjc:job:j1", "id", json.dumps("j1"))
    redis_client.hset("sjc:job:j2", "id", json.dumps("j2"))
    webhooks.register(redis_client, "j1", "alice", "http://example.com/a", ["started", "completed"])
    webhooks.register(redis_client, "j2", "alice", "http://example.com/b", ["completed"])
    for job in ("j1", "j2"):
        xadd_event(redis_client, job, "state", {"status": "queued", "stage": "queued"})
        xadd_event(redis_client, job, "state", {"status": "running", "stage": "loading_model", "attempt": 1})
    sent: list[Delivery] = []
    assert watch_once(redis_client, lambda d, _delay: sent.append(d)) == 1
    assert [(d.job_id, d.event) for d in sent] == [("j1", "started")]
    xadd_event(redis_client, "j1", "state", {"status": "running", "stage": "loading_model", "attempt": 2})  # resume
    for job in ("j1", "j2"):
        xadd_event(redis_client, job, "done", {"status": "succeeded"})
    redis_client.hset(webhooks.webhook_key("j1"), "cursor", "0")  # a watcher restarted from scratch: no repeats
    watch_once(redis_client, lambda d, _delay: sent.append(d))
    assert sorted((d.job_id, d.event) for d in sent) == [("j1", "completed"), ("j1", "started"), ("j2", "completed")]
    body = json.loads(next(d for d in sent if d.job_id == "j2").body)
    assert body["type"] == "job.completed" and body["data"] == {"id": "j2", "status": "succeeded"}
    assert redis_client.smembers(webhooks.WATCH_KEY) == set()  # finished jobs are no longer watched


def test_watch_forgets_deleted_jobs(redis_client):
    webhooks.register(redis_client, "gone", "alice", "http://example.com/a", ["completed"])
    assert watch_once(redis_client, lambda d, _delay: None) == 0
    assert redis_client.smembers(webhooks.WATCH_KEY) == set() and webhooks.webhook_of(redis_client, "gone") is None
