"""JobStore against a real redis-server: creation, indexes, pagination, idempotency, leases, deletion.

The transitions are tested in ``test_lifecycle.py``.
"""

from __future__ import annotations

import threading
import time

import pytest

from sjc_service.idempotency import IdempotencyConflict
from sjc_service.jobs import ActiveJobLimit, JobStore
from sjc_service.keyspace import idem_key
from sjc_service.schemas import JobStatus


def spec(steps: int = 1, seed: int = 3, **settings) -> dict:
    """A stored run spec (``RunSpec.to_dict()``'s shape; the store does not look inside but for ``steps``)."""
    return {"model": "toy", "prompt": "a red sphere", "seed": seed, "settings": {"steps": steps, **settings},
            "outputs": ["mesh"], "mesh_formats": ["glb"]}


@pytest.fixture
def jobs(redis_client) -> JobStore:
    return JobStore(redis_client)


def test_create_get_roundtrip(jobs):
    rec, created = jobs.create("alice", spec(steps=7))
    assert created
    got = jobs.get(rec.id)
    assert got == rec
    assert got.status == JobStatus.queued and got.total_steps == 7 and got.spec["seed"] == 3
    assert jobs.get("nope") is None
    assert jobs.indexes.active_count("alice") == 1 and jobs.indexes.active_count("bob") == 0
    assert jobs.indexes.counts_by_status()["queued"] == 1 and jobs.indexes.queue_position(rec.id) == 0


def test_list_pagination_newest_first(jobs):
    ids = []
    for i in range(7):
        rec, _ = jobs.create("alice", spec(seed=i))
        ids.append(rec.id)
        time.sleep(0.002)
    jobs.create("bob", spec())
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
    jobs.lifecycle.request_cancel(ids[2])
    page, cursor = jobs.list("alice", status="canceled")
    assert [r.id for r in page] == [ids[2]] and cursor is None
    with pytest.raises(ValueError):
        jobs.list("alice", cursor="garbage!!")


def test_list_pagination_with_equal_timestamps(jobs, redis_client):
    """Jobs created in the same millisecond page without loss or repetition."""
    recs = [jobs.create("alice", spec(seed=i))[0] for i in range(5)]
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
    a, created_a = jobs.create("alice", spec(seed=1), idempotency_key="k1", request_hash="h1")
    b, created_b = jobs.create("alice", spec(seed=1), idempotency_key="k1", request_hash="h1")
    assert created_a and not created_b and a.id == b.id
    with pytest.raises(IdempotencyConflict) as info:
        jobs.create("alice", spec(seed=2), idempotency_key="k1", request_hash="h2")
    assert info.value.job_id == a.id
    c, created_c = jobs.create("bob", spec(seed=1), idempotency_key="k1", request_hash="h1")  # keys are per owner
    assert created_c and c.id != a.id


def test_leases(jobs):
    rec, _ = jobs.create("alice", spec())
    leases = jobs.leases
    assert leases.acquire(rec.id, "w1", ttl=0.3)
    assert leases.acquire(rec.id, "w1", ttl=0.3)  # re-entrant for its holder
    assert not leases.acquire(rec.id, "w2", ttl=0.3)
    assert leases.alive(rec.id) and leases.holder(rec.id) == "w1"
    assert leases.renew(rec.id, "w1", ttl=0.3)
    assert not leases.renew(rec.id, "w2", ttl=0.3)
    time.sleep(0.45)
    assert not leases.alive(rec.id)
    assert not leases.renew(rec.id, "w1", ttl=0.3)
    assert leases.acquire(rec.id, "w2", ttl=5)
    assert not leases.release(rec.id, "w1")
    assert leases.release(rec.id, "w2") and not leases.alive(rec.id)


def test_delete(jobs, redis_client):
    rec, _ = jobs.create("alice", spec())
    assert jobs.delete(rec.id)
    assert jobs.get(rec.id) is None
    assert jobs.list("alice") == ([], None)
    assert jobs.indexes.queue_position(rec.id) is None and jobs.indexes.active_count("alice") == 0
    assert jobs.indexes.counts_by_status()["queued"] == 0
    assert not jobs.delete(rec.id)


def test_active_cap_holds_under_concurrent_creates(redis_url):
    import redis as redis_lib

    def worker(out: list) -> None:
        store = JobStore(redis_lib.Redis.from_url(redis_url, decode_responses=True))
        for _ in range(5):
            try:
                store.create("carol", spec(), max_active=3)
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
    assert JobStore(redis_lib.Redis.from_url(redis_url, decode_responses=True)).indexes.active_count("carol") == 3


def test_cap_refusal_releases_the_idempotency_key(jobs):
    jobs.create("dave", spec(), max_active=1)
    with pytest.raises(ActiveJobLimit):
        jobs.create("dave", spec(steps=2), idempotency_key="k1", request_hash="h", max_active=1)
    assert not jobs.redis.exists(idem_key("dave", "k1"))
