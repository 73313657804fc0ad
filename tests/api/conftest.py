"""Fixtures of the API tests: the real app (TestClient) on the session's redis-server and moto server.

No worker runs: created jobs stay queued, and tests move job records through :class:`JobStore`
(what a worker would do) to see the API report progress, events and artifacts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.service import API_KEYS

VOCAB = {"colors": ["red", "green", "blue"], "shapes": ["cube", "sphere", "torus"]}


def auth(owner: str = "alice") -> dict[str, str]:
    """``Authorization`` header of a test key."""
    return {"Authorization": f"Bearer {API_KEYS[owner]}"}


@pytest.fixture
def model_dirs(tmp_path: Path) -> str:
    """A model folder with a narrow model ``toy`` (sjc_model.json with a vocabulary) and an open ``wide`` one."""
    root = tmp_path / "models"
    (root / "toy").mkdir(parents=True)
    meta = {"name": "toy", "kind": "pixel", "description": "test model", "vocabulary": VOCAB,
            "defaults": {"render_size": 32, "grid_size": 32, "steps": 500, "guidance_scale": 10.0}}
    (root / "toy" / "sjc_model.json").write_text(json.dumps(meta))
    (root / "wide").mkdir()
    (root / "wide" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return str(root)


@pytest.fixture
def api_settings(redis_url: str, moto_server: str, s3_bucket: str, model_dirs: str, tmp_path: Path):
    from sjc_service.settings import Settings

    return Settings(
        redis_url=redis_url, store="s3", s3_endpoint_url=moto_server, s3_public_url=moto_server,
        s3_bucket=s3_bucket, s3_access_key_id="testing", s3_secret_access_key="testing",
        signing_secret="test-signing-secret", api_keys=",".join(f"{o}:{k}" for o, k in API_KEYS.items()),
        max_active_jobs_per_key=3, max_steps=2000, max_prompt_chars=80, model_dirs=[model_dirs],
        default_model="toy", local_store_dir=str(tmp_path / "store"), url_expiry_s=60,
    )


@pytest.fixture
def client(api_settings) -> Iterator[TestClient]:
    """The API on S3 (moto), with 0.3 s SSE heartbeats."""
    from api.main import create_app

    with TestClient(create_app(api_settings, sse_heartbeat_s=0.3)) as c:
        yield c


@pytest.fixture
def services(client: TestClient):
    """The app's clients (JobStore, EventStream, store...), to play the worker's part."""
    return client.app.state.services


TEST_WORKER = "test-worker:1"


def start_job(jobs, job_id: str):
    """What a worker does when it takes a job: hold its lease, start it, load the model (stage optimizing)."""
    from sjc_service.schemas import JobStatus

    assert jobs.leases.acquire(job_id, TEST_WORKER, 600)
    rec = jobs.lifecycle.start(job_id, max_attempts=3)
    assert rec is not None and rec.status == JobStatus.running, rec
    return jobs.lifecycle.optimize(job_id, rec.total_steps, None)


def finish_job(jobs, job_id: str, artifacts=(), warnings=()):
    """What a worker does after its last step: export, upload, succeed, release the lease."""
    rec = jobs.get(job_id)
    assert jobs.lifecycle.export(job_id, rec.total_steps) is not None
    assert jobs.lifecycle.upload(job_id) is not None
    done = jobs.lifecycle.succeed(job_id, list(artifacts), list(warnings))
    jobs.leases.release(job_id, TEST_WORKER)
    return done
