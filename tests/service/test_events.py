"""EventStream against a real redis-server: ids, reading from an id, blocking reads."""

from __future__ import annotations

import threading
import time

import pytest

from sjc_service.events import EventStream


def test_publish_and_read_from_id(redis_client):
    ev = EventStream(redis_client)
    ids = [ev.publish("j1", "progress", {"step": i, "total": 5}) for i in range(5)]
    assert ids == sorted(ids, key=lambda s: tuple(int(x) for x in s.split("-")))
    all_events = ev.read("j1")
    assert [d["step"] for _, _, d in all_events] == [0, 1, 2, 3, 4]
    assert [i for i, _, _ in all_events] == ids
    after = ev.read("j1", last_id=ids[2])  # what an SSE client sends as Last-Event-ID
    assert [d["step"] for _, _, d in after] == [3, 4]
    assert ev.read("j1", last_id=ids[-1]) == []
    assert ev.read("other") == []


def test_blocking_read_wakes_on_publish(redis_client, redis_url):
    from sjc_service.connections import redis_from_url

    ev = EventStream(redis_client)
    first = ev.publish("j2", "state", {"status": "queued"})

    def later() -> None:
        time.sleep(0.2)
        EventStream(redis_from_url(redis_url)).publish("j2", "done", {"status": "succeeded"})

    threading.Thread(target=later).start()
    t0 = time.monotonic()
    got = ev.read("j2", last_id=first, block_ms=3000)
    assert 0.1 < time.monotonic() - t0 < 2.5
    assert [(e, d["status"]) for _, e, d in got] == [("done", "succeeded")]


def test_stream_is_capped_and_rejects_unknown_types(redis_client):
    ev = EventStream(redis_client, maxlen=10)
    for i in range(500):
        ev.publish("j3", "progress", {"step": i})
    n = redis_client.xlen("sjc:job:j3:events")
    assert n < 500  # approximate trimming keeps it near maxlen
    with pytest.raises(ValueError):
        ev.publish("j3", "bogus", {})
