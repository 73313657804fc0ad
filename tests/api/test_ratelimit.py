"""Per-key request rates (token bucket in Redis) with RateLimit headers, 429 + Retry-After, and GET /v1/usage."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import auth

HEADER = re.compile(r'^"default";r=(\d+);t=(\d+)$')


@pytest.fixture
def tight(api_settings) -> Iterator[TestClient]:
    """The API with a bucket of 3 requests refilled at 6 a minute (one token per 10 s)."""
    from api.main import create_app

    settings = api_settings.model_copy(update={"rate_limit_per_min": 6, "rate_limit_burst": 3})
    with TestClient(create_app(settings)) as c:
        yield c


def test_bucket_empties_then_429_with_retry_after_per_key(tight):
    remaining = []
    for _ in range(3):
        r = tight.get("/v1/jobs", headers=auth())
        assert r.status_code == 200
        assert r.headers["ratelimit-policy"] == '"default";q=3;w=30'
        remaining.append(int(HEADER.match(r.headers["ratelimit"]).group(1)))
    assert remaining == [2, 1, 0]
    r = tight.get("/v1/jobs", headers=auth())
    assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
    assert 1 <= int(r.headers["retry-after"]) <= 10 and r.json()["type"].endswith("rate-limited")
    assert HEADER.match(r.headers["ratelimit"]).group(1) == "0"
    assert tight.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).status_code == 429
    assert tight.get("/v1/jobs", headers=auth("bob")).status_code == 200  # another key, another bucket
    assert tight.get("/healthz").status_code == 200 and "ratelimit" not in tight.get("/healthz").headers


def test_streams_and_deletes_carry_the_headers_too(client):
    job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
    client.post(f"/v1/jobs/{job_id}/cancel", headers=auth())
    r = client.get(f"/v1/jobs/{job_id}/events", headers=auth())
    assert r.status_code == 200 and HEADER.match(r.headers["ratelimit"])
    r = client.delete(f"/v1/jobs/{job_id}", headers=auth())
    assert r.status_code == 204 and HEADER.match(r.headers["ratelimit"])


def test_usage_counts_jobs_by_status_and_compute_seconds(client, services):
    ids = [client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"] for _ in range(3)]
    services.jobs.lifecycle.start(ids[0], max_attempts=3)
    services.jobs.lifecycle.request_cancel(ids[1])
    client.post("/v1/jobs", json={"prompt": "a blue torus"}, headers=auth("bob"))
    u = client.get("/v1/usage", headers=auth()).json()
    assert u["owner"] == "alice" and u["total_jobs"] == 3 and u["active_jobs"] == 2
    assert u["jobs"] == {"queued": 1, "running": 1, "succeeded": 0, "failed": 0, "canceled": 1}
    assert u["compute_s"] > 0  # the running job's time so far
    assert u["max_active_jobs"] == 3 and u["rate_limit"]["burst"] == 30 and 0 < u["rate_limit"]["remaining"] <= 30
    assert client.get("/v1/usage", headers=auth("bob")).json()["jobs"]["queued"] == 1


def test_openapi_declares_the_429_of_every_keyed_route(client):
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        if path.startswith("/v1/") and not path.startswith("/v1/files/"):
            for method, op in item.items():
                assert "429" in op["responses"], (method, path)
