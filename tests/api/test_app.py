"""The app as a whole: no torch, OpenAPI renders, health probes, problem+json for routing errors."""

from __future__ import annotations

import subprocess
import sys

from tests.api.conftest import auth
from tests.fixtures.service import ROOT, free_port

PROBLEM = "application/problem+json"


def test_importing_the_api_leaves_torch_out():
    code = "import sys, api.main; bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_openapi_renders(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/events",
                 "/v1/jobs/{job_id}/artifacts", "/v1/files/{key}", "/v1/models", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"redis": "ok", "store": "ok"}


def test_readyz_is_503_when_redis_is_down(api_settings):
    from fastapi.testclient import TestClient

    from api.main import create_app

    dead = api_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
        assert r.json()["checks"]["redis"].startswith("unavailable") and r.json()["checks"]["store"] == "ok"
        r = c.get("/v1/jobs", headers=auth())
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM


def test_routing_errors_are_problems(client):
    r = client.get("/v1/nothing-here", headers=auth())
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert r.json()["status"] == 404 and r.json()["instance"] == "/v1/nothing-here"
    r = client.delete("/v1/jobs", headers=auth())
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM
    assert "GET" in r.headers["allow"] and "POST" in r.headers["allow"]


def test_models_lists_the_model_folders(client):
    r = client.get("/v1/models", headers=auth())
    assert r.status_code == 200
    by_name = {m["name"]: m for m in r.json()["items"]}
    assert by_name["toy"]["default"] is True and by_name["toy"]["vocabulary"]["shapes"] == ["cube", "sphere", "torus"]
    assert by_name["wide"]["vocabulary"] is None and by_name["wide"]["default"] is False
    assert client.get("/v1/models").status_code == 401


def test_the_api_creates_its_bucket_at_start_up(api_settings):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.fixtures.service import wait_until

    fresh = api_settings.model_copy(update={"s3_bucket": f"fresh-{free_port()}"})
    with TestClient(create_app(fresh)) as c:
        store = c.app.state.services.store
        wait_until(lambda: c.get("/readyz").status_code == 200, 30, interval=0.2, what="the new bucket")
        store.put_bytes("jobs/j1/a.txt", b"hi", "text/plain")
        assert store.get_bytes("jobs/j1/a.txt") == b"hi"
