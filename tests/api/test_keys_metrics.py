"""API keys are stored hashed; /metrics reports jobs by status, queue depth and a run-time histogram."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sjc_service.keys import KEYS_HASH, ApiKeyStore, hash_key
from sjc_service.lifecycle import utcnow
from tests.api.conftest import auth, finish_job, start_job
from tests.fixtures.service import API_KEYS


def test_keys_are_stored_as_sha256_and_verified(redis_client, api_settings):
    keys = ApiKeyStore(redis_client)
    assert keys.bootstrap(api_settings) == 2
    stored = redis_client.hgetall(KEYS_HASH)
    assert set(stored) == {hash_key(k) for k in API_KEYS.values()}
    assert not any(k in str(stored) for k in API_KEYS.values())  # no key in clear anywhere
    assert keys.verify(API_KEYS["alice"]) == "alice" and keys.verify(API_KEYS["bob"]) == "bob"
    assert keys.verify(API_KEYS["alice"] + "x") is None and keys.verify("") is None
    keys.add("carol", "sk-carol-000000000000")
    assert keys.verify("sk-carol-000000000000") == "carol"
    assert keys.revoke("sk-carol-000000000000") and keys.verify("sk-carol-000000000000") is None
    with pytest.raises(ValueError):
        keys.add("dave", "short")
    with pytest.raises(ValueError):
        ApiKeyStore(redis_client).bootstrap(api_settings.model_copy(update={"api_keys": "nocolon"}))


def metric(text: str, name: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.split(" ")[0] == name)
    return float(line.rsplit(" ", 1)[1])


def test_metrics(client, services):
    ids = [client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"] for _ in range(3)]
    jobs = services.jobs
    start_job(jobs, ids[0])
    jobs.records.apply(ids[0], lambda rec: {"started_at": utcnow() - timedelta(seconds=90)})  # a 90 s run
    finish_job(jobs, ids[0])
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, 'sjc_jobs{status="queued"}') == 2 and metric(text, 'sjc_jobs{status="succeeded"}') == 1
    assert metric(text, "sjc_queue_depth") == 2
    assert metric(text, "sjc_broker_messages") == 3  # nothing consumed the Celery messages
    # a 90 s run: outside the 60 s bucket, inside 120 s and every larger one
    assert metric(text, 'sjc_job_duration_seconds_bucket{le="60"}') == 0
    assert metric(text, 'sjc_job_duration_seconds_bucket{le="120"}') == 1
    assert metric(text, 'sjc_job_duration_seconds_bucket{le="+Inf"}') == 1
    assert metric(text, "sjc_job_duration_seconds_count") == 1
    assert metric(text, "sjc_job_duration_seconds_sum") == pytest.approx(90.0, abs=5.0)
