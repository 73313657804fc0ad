"""An object-store outage is a 503 with Retry-After, and the client never sees the internal endpoint or keys."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import auth
from tests.fixtures.service import free_port


def test_artifacts_during_a_store_outage_is_503_without_internals(api_settings):
    from api.main import create_app

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = api_settings.model_copy(update={"s3_endpoint_url": dead, "s3_public_url": dead, "s3_max_attempts": 2})
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
        r = client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth())
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json" and int(r.headers["retry-after"]) > 0
    assert r.json()["type"].endswith("store-unavailable") and set(r.json()) == {"type", "title", "status", "detail", "instance"}
    detail = r.json()["detail"]
    assert "127.0.0.1" not in detail and "jobs/" not in detail and "upload" not in detail, detail
