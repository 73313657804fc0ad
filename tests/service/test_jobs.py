"""JobStore against a real redis-server: transitions, indexes, pagination, idempotency, leases."""

from __future__ import annotations

import threading
import time

import pytest

from sjc_service.events import EventStream
from sjc_service.jobs import ActiveJobLimit, IdempotencyConflict, JobStore, idem_key
from sjc_service.schemas import JobError, JobStatus


@pytest.fixture
def jobs(redis_client) -> JobStore:
    return JobStore(redis_client)


def test_create_get_roundtrip(jobs):
    rec, created = jobs.create("alice", {"prompt": "a red sphere", "steps": 7, "seed": 3})
    assert created
    got = jobs.get(rec.id)
    assert got == rec
    assert got.status == JobStatus.queued and got.total_steps == 7 and got.params["seed"] == 3
    assert jobs.get("nope") is None
    assert jobs.active_count("alice") == 1 and jobs.active_count("bob") == 0
    assert jobs.counts_by_status()["queued"] == 1


def test_transition_is_conditional_and_moves_indexes(jobs):
    a, _ = jobs.create("alice", {"steps": 1})
    b, _ = jobs.create("alice", {"steps": 1})
    assert jobs.queue_position(a.id) == 0 and jobs.queue_position(b.id) == 1
    assert jobs.transition(a.id, {"queued"}, "running", stage="optimizing")
    assert not jobs.transition(a.id, {"queued"}, "running")  # already running
    assert jobs.queue_position(a.id) is None and jobs.queue_position(b.id) == 0
    assert jobs.running_ids() == [a.id]
    err = JobError(code="engine_error", message="boom")
    assert jobs.transition(a.id, {"running"}, "failed", error=err)
    rec = jobs.get(a.id)
    assert rec.status == JobStatus.failed and rec.error == err and rec.finished_at is not None
    assert rec.stage == "failed"
    assert jobs.running_ids() == []
    assert jobs.active_count("alice") == 1
    assert jobs.counts_by_status() == {"queued": 1, "running": 0, "succeeded": 0, "failed": 1, "canceled": 0}
    assert not jobs.transition("missing", {"queued"}, "running")


def test_transition_race_has_one_winner(redis_url):
    """Eight threads race to take one queued job; exactly one transition succeeds."""
    from sjc_service.connections import redis_from_url

    store = JobStore(redis_from_url(redis_url))
    rec, _ = store.create("alice", {"steps": 1})
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def take(i: int) -> None:
        s = JobStore(redis_from_url(redis_url))
        barrier.wait()
        got = s.transition_with(rec.id, {"queued"}, lambda r: {"status": "running", "attempt": r.attempt + 1})
        if got is not None:
            wins.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get(rec.id).attempt == 1


def test_transitions_publish_state_and_done_events(jobs, redis_client):
    rec, _ = jobs.create("alice", {"steps": 2})
    jobs.transition(rec.id, {"queued"}, "running", stage="optimizing", attempt=1)
    jobs.update(rec.id, step=1, progress=50.0)  # no status/stage change: no state event
    jobs.transition(rec.id, {"running"}, "succeeded", progress=100.0)
    events = EventStream(redis_client).read(rec.id)
    kinds = [(e, d.get("status"), d.get("stage")) for _, e, d in events]
    assert kinds == [
        ("state", "queued", "queued"),
        ("state", "running", "optimizing"),
        ("state", "succeeded", "succeeded"),
        ("done", "succeeded", "succeeded"),
    ]
    assert events[-1][2]["progress"] == 100.0


def test_list_pagination_newest_first(jobs):
    ids = []
    for i in range(7):
        rec, _ = jobs.create("alice", {"i": i})
        ids.append(rec.id)
        time.sleep(0.002)
    jobs.create("bob", {"i": 99})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = jobs.list("alice", cursor=cursor, limit=3)
        seen += [r.id for r in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == ids[::-1]
    jobs.transition(ids[2], {"queued"}, "canceled")
    page, cursor = jobs.list("alice", status="canceled")
    assert [r.id for r in page] == [ids[2]] and cursor is None
    with pytest.raises(ValueError):
        jobs.list("alice", cursor="garbage!!")


def test_list_pagination_with_equal_timestamps(jobs, redis_client):
    """Jobs created in the same millisecond page without loss or repetition."""
    recs = [jobs.create("alice", {"i": i})[0] for i in range(5)]
    score = 1_700_000_000_000
    for r in recs:
        redis_client.zadd(f"sjc:owner:alice:jobs", {r.id: score})
    seen = []
    cursor = None
    while True:
        page, cursor = jobs.list("alice", cursor=cursor, limit=2)
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(r.id for r in recs) and len(seen) == 5


def test_idempotency(jobs):
    a, created_a = jobs.create("alice", {"p": 1}, idempotency_key="k1", request_hash="h1")
    b, created_b = jobs.create("alice", {"p": 1}, idempotency_key="k1", request_hash="h1")
    assert created_a and not created_b and a.id == b.id
    with pytest.raises(IdempotencyConflict) as info:
        jobs.create("alice", {"p": 2}, idempotency_key="k1", request_hash="h2")
    assert info.value.job_id == a.id
    c, created_c = jobs.create("bob", {"p": 1}, idempotency_key="k1", request_hash="h1")  # keys are per owner
    assert created_c and c.id != a.id


def test_cancel_queued_running_finished(jobs):
    q, _ = jobs.create("alice", {})
    rec = jobs.request_cancel(q.id)
    assert rec.status == JobStatus.canceled and rec.cancel_requested
    assert jobs.queue_position(q.id) is None and jobs.active_count("alice") == 0
    assert not jobs.transition(q.id, {"queued", "running"}, "running")  # a canceled job never runs

    r, _ = jobs.create("alice", {})
    jobs.transition(r.id, {"queued"}, "running")
    assert not jobs.cancel_requested(r.id)
    rec = jobs.request_cancel(r.id)
    assert rec.status == JobStatus.running and rec.cancel_requested and jobs.cancel_requested(r.id)

    d, _ = jobs.create("alice", {})
    jobs.transition(d.id, {"queued"}, "running")
    jobs.transition(d.id, {"running"}, "succeeded")
    rec = jobs.request_cancel(d.id)
    assert rec.status == JobStatus.succeeded and not rec.cancel_requested
    assert jobs.request_cancel("missing") is None


def test_leases(jobs):
    rec, _ = jobs.create("alice", {})
    assert jobs.acquire_lease(rec.id, "w1", ttl=0.3)
    assert jobs.acquire_lease(rec.id, "w1", ttl=0.3)  # re-entrant for its holder
    assert not jobs.acquire_lease(rec.id, "w2", ttl=0.3)
    assert jobs.lease_alive(rec.id) and jobs.lease_owner(rec.id) == "w1"
    assert jobs.renew_lease(rec.id, "w1", ttl=0.3)
    assert not jobs.renew_lease(rec.id, "w2", ttl=0.3)
    time.sleep(0.45)
    assert not jobs.lease_alive(rec.id)
    assert not jobs.renew_lease(rec.id, "w1", ttl=0.3)
    assert jobs.acquire_lease(rec.id, "w2", ttl=5)
    assert not jobs.release_lease(rec.id, "w1")
    assert jobs.release_lease(rec.id, "w2") and not jobs.lease_alive(rec.id)


def test_delete(jobs, redis_client):
    rec, _ = jobs.create("alice", {})
    assert jobs.delete(rec.id)
    assert jobs.get(rec.id) is None
    assert jobs.list("alice") == ([], None)
    assert jobs.queue_position(rec.id) is None and jobs.active_count("alice") == 0
    assert jobs.counts_by_status()["queued"] == 0
    assert not jobs.delete(rec.id)


def test_active_cap_holds_under_concurrent_creates(redis_url):
    import redis as redis_lib

    def worker(out: list) -> None:
        store = JobStore(redis_lib.Redis.from_url(redis_url, decode_responses=True))
        for _ in range(5):
            try:
                store.create("carol", {"steps": 1}, max_active=3)
                out.append("ok")
            except ActiveJobLimit:
                out.append("limit")

    results: list[str] = []
    threads = [threading.Thread(target=worker, args=(results,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 3 and results.count("limit") == 17
    assert JobStore(redis_lib.Redis.from_url(redis_url, decode_responses=True)).active_count("carol") == 3


def test_cap_refusal_releases_the_idempotency_key(jobs):
    jobs.create("dave", {"steps": 1}, max_active=1)
    with pytest.raises(ActiveJobLimit):
        jobs.create("dave", {"steps": 2}, idempotency_key="k1", request_hash="h", max_active=1)
    assert not jobs.redis.exists(idem_key("dave", "k1"))
