"""Outages during a run: the object store down sends the job back to the queue (no attempt used, no
internals in its error); Redis down during progress writes does not stop the run."""

from __future__ import annotations

import json
import time

from sjc_engine.callbacks import StepReport
from sjc_service.schemas import JobStatus
from sjc_service.store import StoreUnavailable
from tests.fixtures.service import free_port
from worker.context import WorkerContext
from worker.outage import outage_delay, outage_key, requeue_after_outage
from worker.runner import run_job


def _params(service_model, settings, steps: int = 6):
    """The stored run spec of a short job, resolved as the API resolves it."""
    from sjc_engine.run_spec import resolve_run

    request = {"prompt": "a red sphere", "model": service_model.name, "seed": 1, "steps": steps, "grid_size": 12,
               "render_size": 16, "video_frames": 2, "preview_every": 3,
               "mesh_threshold": service_model.short_run_mesh_threshold}
    return resolve_run(request, settings.run_limits()).to_dict()


def test_store_outage_requeues_the_job_with_backoff_without_using_an_attempt(service_settings, service_model):
    dead = f"http://127.0.0.1:{free_port()}"
    settings = service_settings.model_copy(update={"s3_endpoint_url": dead, "s3_public_url": dead,
                                                   "s3_max_attempts": 2})
    ctx = WorkerContext.from_settings(settings, worker_id="test-host:1")
    rec, _ = ctx.jobs.create("alice", _params(service_model, ctx.settings))
    outcome = run_job(rec.id, ctx)
    assert outcome == "requeued", ctx.jobs.get(rec.id).error
    after = ctx.jobs.get(rec.id)
    assert after.status == JobStatus.queued and after.stage == "requeued" and after.attempt == 0
    assert after.error is None
    messages = [json.loads(m) for m in ctx.jobs.redis.lrange(settings.queue_name, 0, -1)]
    assert len(messages) == 1 and messages[0]["headers"]["eta"] is not None  # a delayed Celery message
    assert messages[0]["headers"]["argsrepr"] == repr((rec.id,)) or rec.id in messages[0]["headers"]["argsrepr"]
    assert int(ctx.jobs.redis.get(outage_key(rec.id))) == 1


def test_too_many_outages_fail_the_job_without_internals(service_settings, service_model):
    ctx = WorkerContext.from_settings(service_settings, worker_id="test-host:1")
    rec, _ = ctx.jobs.create("alice", _params(service_model, ctx.settings))
    ctx.jobs.lifecycle.start(rec.id, max_attempts=3)
    delays: list[float] = []
    exc = StoreUnavailable("upload")
    assert requeue_after_outage(ctx.jobs, rec.id, exc, lambda _id, d: delays.append(d), max_requeues=1) == "requeued"
    ctx.jobs.lifecycle.start(rec.id, max_attempts=3)
    assert ctx.jobs.get(rec.id).attempt == 1  # the outage gave its attempt back
    assert requeue_after_outage(ctx.jobs, rec.id, exc, lambda _id, d: delays.append(d), max_requeues=1) == "failed"
    failed = ctx.jobs.get(rec.id)
    assert failed.status == JobStatus.failed and failed.error.code == "store_unavailable"
    assert "http" not in failed.error.message and "jobs/" not in failed.error.message
    assert delays == [outage_delay(1)]
    assert [outage_delay(n) for n in (1, 2, 3, 6)] == [15.0, 30.0, 60.0, 300.0]


def test_progress_writes_ride_out_a_redis_outage(service_settings, tmp_path):
    from worker.callbacks import JobCallbacks

    settings = service_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    ctx = WorkerContext.from_settings(settings, worker_id="test-host:1")
    cb = JobCallbacks(ctx, "some-job", keeper=None, start_step=0, work_dir=tmp_path)
    for step in (1, 2):  # Redis is unreachable: nothing raises, the run goes on
        cb.on_step(StepReport(step=step, total=2, losses={"score": 1.0}, sigma=0.5))
    cb.on_export(2)
    assert cb.last_step == 2


def test_a_redis_restart_mid_run_costs_no_attempt(service_settings, service_model, tmp_path):
    """The run keeps going while Redis is away for a moment; the job succeeds on its first attempt."""
    import threading

    from tests.api.test_stream_outage import start_redis
    from tests.fixtures.service import wait_until

    port = free_port()
    procs = [start_redis(port, tmp_path)]
    try:
        settings = service_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
        ctx = WorkerContext.from_settings(settings, worker_id="test-host:1")
        rec, _ = ctx.jobs.create("alice", _params(service_model, settings, steps=200))
        outcome: list[str] = []
        runner = threading.Thread(target=lambda: outcome.append(run_job(rec.id, ctx)), daemon=True)
        runner.start()
        wait_until(lambda: (ctx.jobs.get(rec.id).step or 0) >= 2, 120, interval=0.05, what="the run's first steps")
        procs[0].stop()  # Redis goes away mid-run...
        time.sleep(1.5)
        procs.append(start_redis(port, tmp_path))  # ...and comes back with its data (AOF)
        assert runner.is_alive()  # the outage fell inside the run
        runner.join(timeout=300)
        final = ctx.jobs.get(rec.id)
        assert outcome == ["succeeded"], (outcome, final.error)
        assert final.attempt == 1 and final.step == 200
    finally:
        for sp in procs:
            sp.stop()
