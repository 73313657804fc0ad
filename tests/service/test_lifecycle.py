"""The job lifecycle against a real redis-server: legal moves, refused moves, events, monotonic progress,
cancel rules and the queue order after a requeue."""

from __future__ import annotations

import threading

import pytest

from sjc_service.events import EventStream
from sjc_service.jobs import JobStore
from sjc_service.lifecycle import TRANSITIONS, IllegalTransition, JobStatus, Stage, check_move
from tests.service.test_jobs import spec


@pytest.fixture
def jobs(redis_client) -> JobStore:
    return JobStore(redis_client)


def running(jobs: JobStore, steps: int = 10) -> str:
    rec, _ = jobs.create("alice", spec(steps=steps))
    assert jobs.lifecycle.start(rec.id, max_attempts=3).stage == Stage.loading_model
    assert jobs.lifecycle.optimize(rec.id, steps, None).stage == Stage.optimizing
    return rec.id


def test_the_graph_refuses_illegal_moves():
    assert check_move("start", Stage.queued).stage == Stage.loading_model
    for name, stage in [("succeed", Stage.optimizing), ("export", Stage.loading_model), ("start", Stage.done),
                        ("cancel", Stage.optimizing), ("requeue", Stage.queued), ("progress", Stage.exporting),
                        ("fail", Stage.canceled)]:
        with pytest.raises(IllegalTransition):
            check_move(name, stage)
    finished = {Stage.done, Stage.failed, Stage.canceled}
    assert all(not (t.sources & finished) for t in TRANSITIONS.values())  # nothing leaves a finished job


def test_a_run_goes_through_every_stage_with_events(jobs, redis_client):
    job_id = running(jobs, steps=2)
    life = jobs.lifecycle
    assert life.succeed(job_id, [], []) is None  # refused: still optimizing
    assert life.progress(job_id, 1, 2, 50.0, 1.0).step == 1
    assert life.export(job_id, 2).stage == Stage.exporting
    assert life.progress(job_id, 2, 2, 99.0, 0.0) is None  # refused: exporting
    assert life.upload(job_id).stage == Stage.uploading
    done = life.succeed(job_id, [], ["mesh skipped: empty"])
    assert done.status == JobStatus.succeeded and done.stage == Stage.done and done.progress == 100.0
    assert done.step == 2 and done.finished_at is not None and done.warnings == ["mesh skipped: empty"]
    assert life.fail(job_id, "engine_error", "late") is None and jobs.get(job_id).status == JobStatus.succeeded
    events = EventStream(redis_client).read(job_id)
    states = [(e, d.get("status"), d.get("stage")) for _, e, d in events]
    assert states == [
        ("state", "queued", "queued"), ("state", "running", "loading_model"), ("state", "running", "optimizing"),
        ("state", "running", "exporting"), ("state", "running", "uploading"), ("state", "succeeded", "done"),
        ("done", "succeeded", "done"),
    ]
    done_event = events[-1][2]
    assert "owner" not in done_event and "cancel_requested" not in done_event and "spec" not in done_event
    assert done_event["params"]["seed"] == 3 and done_event["params"]["steps"] == 2


def test_progress_never_goes_back_after_a_resume(jobs):
    job_id = running(jobs, steps=40)
    assert jobs.lifecycle.progress(job_id, 26, 40, 65.0, 5.0).step == 26
    assert jobs.lifecycle.requeue(job_id, lambda rec: True).status == JobStatus.queued
    assert jobs.lifecycle.start(job_id, max_attempts=3).attempt == 2
    resumed = jobs.lifecycle.optimize(job_id, 40, resumed_from_step=20)  # the last checkpoint was at 20
    assert resumed.step == 26 and resumed.resumed_from_step == 20 and resumed.progress == 65.0
    for step in range(21, 27):  # the replayed steps are not reported
        assert jobs.lifecycle.progress(job_id, step, 40, 100 * step / 40, 3.0) is None
    assert jobs.get(job_id).step == 26
    assert jobs.lifecycle.progress(job_id, 27, 40, 67.5, 3.0).step == 27


def test_a_requeued_job_goes_to_the_tail_of_the_queue(jobs):
    first = running(jobs)
    second, _ = jobs.create("alice", spec())
    third, _ = jobs.create("alice", spec())
    assert jobs.lifecycle.requeue(first, lambda rec: True).stage == Stage.requeued
    order = sorted([first, second.id, third.id], key=jobs.indexes.queue_position)
    assert order == [second.id, third.id, first]  # as the broker holds their messages
    assert jobs.indexes.running_ids() == []
    assert jobs.lifecycle.requeue(first, lambda rec: True) is None  # already queued


def test_start_race_has_one_winner(redis_url):
    """Eight workers race for one queued job as the runner does (lease, then start): one runs it."""
    from sjc_service.connections import redis_from_url

    store = JobStore(redis_from_url(redis_url))
    rec, _ = store.create("alice", spec())
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def take(i: int) -> None:
        s = JobStore(redis_from_url(redis_url))
        barrier.wait()
        if s.leases.acquire(rec.id, f"w{i}", ttl=30) and s.lifecycle.start(rec.id, max_attempts=3) is not None:
            wins.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and store.get(rec.id).attempt == 1 and store.leases.holder(rec.id) == f"w{wins[0]}"


def test_start_cancels_a_cancelled_job_and_gives_up_after_max_attempts(jobs):
    q, _ = jobs.create("alice", spec())
    jobs.records.apply(q.id, lambda rec: {"cancel_requested": True})
    assert jobs.lifecycle.start(q.id, max_attempts=3).status == JobStatus.canceled
    r, _ = jobs.create("alice", spec())
    jobs.records.apply(r.id, lambda rec: {"attempt": 3})
    failed = jobs.lifecycle.start(r.id, max_attempts=3)
    assert failed.status == JobStatus.failed and failed.error.code == "too_many_attempts"


def test_cancel_queued_running_finished(jobs):
    q, _ = jobs.create("alice", spec())
    rec, accepted = jobs.lifecycle.request_cancel(q.id)
    assert accepted and rec.status == JobStatus.canceled and rec.cancel_requested
    assert jobs.indexes.queue_position(q.id) is None and jobs.indexes.active_count("alice") == 0
    assert jobs.lifecycle.start(q.id, max_attempts=3) is None  # a canceled job never runs
    assert jobs.lifecycle.request_cancel(q.id)[1] is False  # canceled is finished

    r = running(jobs)
    assert not jobs.records.cancel_requested(r)
    rec, accepted = jobs.lifecycle.request_cancel(r)
    assert accepted and rec.status == JobStatus.running and jobs.records.cancel_requested(r)
    stopped = jobs.lifecycle.stop(r, [])
    assert stopped.status == JobStatus.canceled and stopped.stage == Stage.canceled

    assert jobs.lifecycle.request_cancel("missing") == (None, False)


def test_records_of_the_old_layout_still_load(jobs, redis_client):
    """Before the Stage enum a succeeded job's stage was stored as "succeeded"."""
    rec, _ = jobs.create("alice", spec())
    redis_client.hset(f"sjc:job:{rec.id}", mapping={"status": '"succeeded"', "stage": '"succeeded"'})
    assert jobs.get(rec.id).stage == Stage.done
