"""Idempotency, the per-key cap, owner isolation, pagination and cancel rules of /v1/jobs."""

from __future__ import annotations

from sjc_service.keyspace import lease_key
from tests.api.conftest import auth, finish_job, start_job

BODY = {"prompt": "a red cube", "steps": 20}


def create(client, owner="alice", **extra):
    r = client.post("/v1/jobs", json={**BODY, **extra}, headers=auth(owner))
    assert r.status_code == 202, r.text
    return r.json()


def test_idempotency_key_same_body_same_job_other_body_refused(client, services):
    headers = {**auth(), "Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json=BODY, headers=headers)
    again = client.post("/v1/jobs", json=BODY, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert again.json()["params"]["seed"] == first.json()["params"]["seed"]
    other = client.post("/v1/jobs", json={**BODY, "steps": 21}, headers=headers)
    assert other.status_code == 422 and other.json()["type"].endswith("idempotency-key-reused")
    assert other.json()["job_id"] == first.json()["id"]
    assert services.redis.llen(services.settings.queue_name) == 1  # enqueued once
    # the same key of another owner is another key
    assert client.post("/v1/jobs", json=BODY, headers={**auth("bob"), "Idempotency-Key": "order-42"}).json()["id"] != first.json()["id"]


def test_active_job_cap_is_429_with_retry_after(client, services):
    jobs = [create(client) for _ in range(3)]  # max_active_jobs_per_key=3
    r = client.post("/v1/jobs", json=BODY, headers=auth())
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert r.headers["content-type"] == "application/problem+json" and r.json()["limit"] == 3
    other = create(client, "bob")  # the cap is per key
    assert "owner" not in other and "cancel_requested" not in other and "spec" not in other  # storage stays inside
    assert client.post(f"/v1/jobs/{jobs[0]['id']}/cancel", headers=auth()).status_code == 202
    assert create(client)["status"] == "queued"  # a slot was freed


def test_one_key_cannot_see_or_cancel_another_keys_jobs(client):
    job = create(client, "alice")
    for method, path in [("get", f"/v1/jobs/{job['id']}"), ("post", f"/v1/jobs/{job['id']}/cancel"),
                         ("get", f"/v1/jobs/{job['id']}/events"), ("get", f"/v1/jobs/{job['id']}/artifacts")]:
        r = client.request(method.upper(), path, headers=auth("bob"))
        assert r.status_code == 404 and r.json()["title"] == "Job not found", path
    assert client.get("/v1/jobs", headers=auth("bob")).json()["items"] == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth("alice")).json()["status"] == "queued"


def test_list_newest_first_with_cursor_pages_and_status_filter(client, services, api_settings):
    services.settings = api_settings.model_copy(update={"max_active_jobs_per_key": 50})
    ids = [create(client, seed=i)["id"] for i in range(7)]
    start_job(services.jobs, ids[2])
    seen, cursor = [], None
    while True:
        r = client.get("/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})}, headers=auth())
        page = r.json()
        assert len(page["items"]) <= 3
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    running = client.get("/v1/jobs", params={"status": "running"}, headers=auth()).json()["items"]
    assert [j["id"] for j in running] == [ids[2]] and running[0]["queue_position"] is None
    assert client.get("/v1/jobs", params={"status": "exploded"}, headers=auth()).json()["errors"][0]["field"] == "status"
    assert client.get("/v1/jobs", params={"cursor": "!!"}, headers=auth()).json()["errors"][0]["field"] == "cursor"
    assert client.get("/v1/jobs", params={"limit": 0}, headers=auth()).status_code == 422


def test_cancel_rules(client, services):
    queued, running, done = create(client)["id"], create(client)["id"], create(client)["id"]
    r = client.post(f"/v1/jobs/{queued}/cancel", headers=auth())
    assert r.status_code == 202 and r.json()["status"] == "canceled" and r.json()["finished_at"]
    assert services.jobs.indexes.queue_position(queued) is None  # the worker will skip it
    r = client.post(f"/v1/jobs/{queued}/cancel", headers=auth())  # canceled is finished: 409, as documented
    assert r.status_code == 409 and r.json()["status_now"] == "canceled"
    start_job(services.jobs, running)
    r = client.post(f"/v1/jobs/{running}/cancel", headers=auth())
    assert r.status_code == 202 and r.json()["status"] == "running"
    assert services.jobs.records.cancel_requested(running)
    assert client.post(f"/v1/jobs/{running}/cancel", headers=auth()).status_code == 202  # still running: accepted
    start_job(services.jobs, done)
    finish_job(services.jobs, done)
    r = client.post(f"/v1/jobs/{done}/cancel", headers=auth())
    assert r.status_code == 409 and r.json()["status_now"] == "succeeded"
    assert client.post("/v1/jobs/000000nope/cancel", headers=auth()).status_code == 404


def test_a_running_job_whose_worker_died_shows_requeueing(client, services):
    job = create(client)["id"]
    start_job(services.jobs, job)
    services.jobs.lifecycle.progress(job, 5, 20, 25.0, 9.0)
    got = client.get(f"/v1/jobs/{job}", headers=auth()).json()
    assert (got["status"], got["stage"], got["step"], got["eta_s"]) == ("running", "optimizing", 5, 9.0)
    services.redis.delete(lease_key(job))  # the lease lapsed: its worker is gone, no reaper came yet
    got = client.get(f"/v1/jobs/{job}", headers=auth()).json()
    assert (got["status"], got["stage"], got["eta_s"], got["queue_position"]) == ("queued", "requeueing", None, None)
    assert services.jobs.get(job).status == "running"  # shown, not stored: the reaper requeues it
