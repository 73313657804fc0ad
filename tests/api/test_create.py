"""POST /v1/jobs: a good request queues a job with effective params; bad ones leave nothing behind."""

from __future__ import annotations

import pytest

from tests.api.conftest import auth

PROBLEM = "application/problem+json"


def test_create_queues_a_job_with_effective_params(client, services):
    r = client.post("/v1/jobs", json={"prompt": "A  Red Cube", "steps": 40}, headers=auth())
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["queue_position"] == 0 and job["total_steps"] == 40
    params = job["params"]
    assert params["prompt"] == "a red cube" and params["model"] == "toy" and params["steps"] == 40
    assert isinstance(params["seed"], int) and 0 <= params["seed"] < 2**31
    assert params["grid_size"] == 32 and params["render_size"] == 32  # the model's defaults, filled in
    assert params["guidance_scale"] == 10.0 and params["outputs"] == sorted(["checkpoint", "video", "mesh", "previews"])
    assert services.redis.llen(api_queue(services)) == 1  # one Celery message, by task name
    got = client.get(r.headers["location"], headers=auth()).json()
    assert got["params"] == params and got["links"]["events"] == f"/v1/jobs/{job['id']}/events"
    second = client.post("/v1/jobs", json={"prompt": "a blue torus", "seed": 7}, headers=auth()).json()
    assert second["params"]["seed"] == 7 and second["queue_position"] == 1


def api_queue(services) -> str:
    return services.settings.queue_name


BAD = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "a red cube " * 20}, "prompt"),  # over max_prompt_chars=80
    ({"prompt": "a purple cube"}, "prompt"),  # outside the toy model's vocabulary
    ({"prompt": "a red cube", "steps": 0}, "steps"),
    ({"prompt": "a red cube", "steps": 5000}, "steps"),  # over max_steps=2000
    ({"prompt": "a red cube", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": "a red cube", "model": "nope"}, "model"),
    ({"prompt": "a red cube", "model": "../models/toy"}, "model"),
    ({"prompt": "a red cube", "outputs": ["hologram"]}, "outputs.0"),
    ({"prompt": "a red cube", "outputs": []}, "outputs"),
    ({"prompt": "a red cube", "mesh_formats": [], "outputs": ["mesh"]}, "mesh_formats"),
    ({"prompt": "a red cube", "colour": "red"}, "colour"),
    ({"steps": 10}, "prompt"),
]


@pytest.mark.parametrize("body,field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_input_is_a_problem_naming_the_field(client, services, body, field):
    r = client.post("/v1/jobs", json=body, headers=auth())
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["status"] == 422 and problem["type"].endswith("validation-error")
    assert field in [e["field"] for e in problem["errors"]], problem
    assert_nothing_left(services)


def test_unknown_model_says_where_it_looked(client, api_settings):
    r = client.post("/v1/jobs", json={"prompt": "a red cube", "model": "nope"}, headers=auth())
    assert api_settings.model_dirs[0] in r.json()["detail"]
    r = client.post("/v1/jobs", json={"prompt": "a cow", "model": "wide"}, headers=auth())
    assert r.status_code == 202  # a model without a vocabulary takes any prompt
    assert r.json()["params"]["steps"] == api_settings.max_steps  # SJCConfig's 10,000 capped by the service


def test_malformed_json_oversized_body_and_auth(client, services):
    r = client.post("/v1/jobs", content=b'{"prompt": "a red', headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM and r.json()["errors"][0]["field"] == "body"
    r = client.post("/v1/jobs", content=b"[1, 2]", headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    big = {"prompt": "a red cube", "pad": "x" * 70_000}
    r = client.post("/v1/jobs", json=big, headers=auth())
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    r = client.post("/v1/jobs", json={"prompt": "a red cube"})
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM and "Bearer" in r.headers["www-authenticate"]
    r = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers={"Authorization": "Bearer sk-wrong-key-000000"})
    assert r.status_code == 401 and r.json()["title"] == "Invalid API key"
    r = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers={"Authorization": "Basic YTpi"})
    assert r.status_code == 401
    assert_nothing_left(services)


def assert_nothing_left(services) -> None:
    assert list(services.redis.scan_iter("sjc:job:*")) == []
    assert services.redis.llen(services.settings.queue_name) == 0
    assert services.store.list("jobs/") == []
