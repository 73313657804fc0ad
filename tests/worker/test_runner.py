"""worker.runner in-process, against a real redis-server, moto's S3 server and a real (tiny) model."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import timedelta

import pytest

from sjc_engine.run_spec import resolve_run
from sjc_service.events import EventStream
from sjc_service.keyspace import job_key
from sjc_service.lifecycle import Stage, utcnow
from sjc_service.schemas import JobStatus
from tests.fixtures.service import wait_until
from worker.context import WorkerContext
from worker.reaper import reap_expired
from worker.runner import run_job


@pytest.fixture
def ctx(service_settings) -> WorkerContext:
    return WorkerContext.from_settings(service_settings, worker_id="test-host:1")


def _params(service_model, **kw):
    """The run spec the API would store for this request."""
    p = {"prompt": "a red sphere", "model": service_model.name, "seed": 1, "steps": 6, "grid_size": 12,
         "render_size": 16, "video_frames": 2, "preview_every": 3,
         "mesh_threshold": service_model.short_run_mesh_threshold}
    p.update(kw)
    return resolve_run(p, _limits(service_model)).to_dict()


def _limits(service_model):
    from sjc_engine.run_spec import RunLimits

    return RunLimits(model_dirs=tuple(service_model.model_dirs))


def test_job_succeeds_with_files_manifest_and_ordered_events(ctx, service_model):
    import trimesh

    rec, _ = ctx.jobs.create("alice", _params(service_model))
    assert run_job(rec.id, ctx) == "succeeded"
    done = ctx.jobs.get(rec.id)
    assert done.status == JobStatus.succeeded and done.progress == 100.0 and done.step == 6
    assert done.attempt == 1 and done.finished_at is not None and not ctx.jobs.leases.alive(rec.id)
    names = {a.name: a for a in done.artifacts}
    for name in ("field.pt", "turntable.mp4", "mesh.glb", "mesh.ply", "mesh.obj", "config.json", "manifest.json",
                 "previews/step_000003.png", "previews/step_000006.png"):
        assert name in names, sorted(names)
    assert names["mesh.glb"].content_type == "model/gltf-binary" and names["turntable.mp4"].content_type == "video/mp4"
    for a in done.artifacts:  # every artifact is in the store with its content type and size
        head = ctx.store.head(a.key)
        assert head is not None and head.size == a.size and head.content_type == a.content_type, a
    manifest = json.loads(ctx.store.get_bytes(f"jobs/{rec.id}/manifest.json"))
    assert manifest["job_id"] == rec.id and manifest["steps_done"] == 6 and manifest["params"]["seed"] == 1
    assert {m["name"] for m in manifest["artifacts"]} == set(names) - {"manifest.json"}
    glb = ctx.store.get_bytes(f"jobs/{rec.id}/mesh.glb")
    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0

    events = EventStream(ctx.jobs.redis).read(rec.id, count=1000)
    kinds = [e for _, e, _ in events]
    assert kinds[0] == "state" and kinds[-1] == "done" and kinds.count("done") == 1
    stages = [d["stage"] for _, e, d in events if e == "state"]
    assert stages == ["queued", "loading_model", "optimizing", "exporting", "uploading", "done"]
    assert [d["status"] for _, e, d in events if e == "state"][-1] == "succeeded"
    steps = [d["step"] for _, e, d in events if e == "progress"]
    assert steps[0] == 1 and steps[-1] == 6 and steps == sorted(steps)
    assert {"score", "emptiness"} <= set(events[[e for _, e, _ in events].index("progress")][2]["losses"])
    previews = [d["key"] for _, e, d in events if e == "preview"]
    assert previews == [f"jobs/{rec.id}/previews/step_000003.png", f"jobs/{rec.id}/previews/step_000006.png"]

    # delivered a second time (acks_late): nothing happens
    assert run_job(rec.id, ctx) == "skipped: already succeeded"
    assert ctx.jobs.get(rec.id).attempt == 1


def test_refused_specs_and_missing_model_fail_with_codes(ctx, service_model):
    """The worker refuses what the API would: a model path, an unknown setting; a model it lacks."""
    good = _params(service_model)
    path, _ = ctx.jobs.create("alice", {**good, "model": "/srv/models/elsewhere"})
    assert run_job(path.id, ctx) == "failed"
    assert ctx.jobs.get(path.id).error.code == "model_not_found"
    odd, _ = ctx.jobs.create("alice", {**good, "settings": {**good["settings"], "warp_drive": 9}})
    assert run_job(odd.id, ctx) == "failed"
    err = ctx.jobs.get(odd.id).error
    assert err.code == "invalid_params" and "warp_drive" in err.message
    missing, _ = ctx.jobs.create("alice", {**good, "model": "no-such-model"})
    assert run_job(missing.id, ctx) == "failed"
    err = ctx.jobs.get(missing.id).error
    assert err.code == "model_not_found" and "no-such-model" in err.message and "/" not in err.message
    assert not ctx.jobs.leases.alive(path.id)


def test_skips_job_leased_by_another_worker(ctx, service_model):
    rec, _ = ctx.jobs.create("alice", _params(service_model))
    assert ctx.jobs.leases.acquire(rec.id, "other-host:9", ttl=30)
    assert run_job(rec.id, ctx).startswith("skipped: running on other-host:9")
    assert ctx.jobs.get(rec.id).status == JobStatus.queued


def test_gives_up_after_max_attempts(ctx, service_model):
    rec, _ = ctx.jobs.create("alice", _params(service_model))
    ctx.jobs.records.apply(rec.id, lambda r: {"attempt": ctx.settings.max_attempts})  # crashed each time
    assert run_job(rec.id, ctx) == "skipped: failed"
    done = ctx.jobs.get(rec.id)
    assert done.status == JobStatus.failed and done.error.code == "too_many_attempts"


def test_cancel_running_keeps_state_then_resume_finishes(ctx, service_model):
    """Cancel a running job: it stops within ~1 s and keeps its resumable state. Then pretend it had
    crashed instead (back to running, lease gone): the next run resumes from that state."""
    rec, _ = ctx.jobs.create("alice", _params(service_model, steps=400, preview_every=0))
    out: dict[str, str] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", run_job(rec.id, ctx)))
    t.start()
    wait_until(lambda: (ctx.jobs.get(rec.id).step or 0) >= 8, 60, what="8 steps")
    t_cancel = time.monotonic()
    ctx.jobs.lifecycle.request_cancel(rec.id)
    t.join(30)
    assert out["r"] == "canceled" and time.monotonic() - t_cancel < 5
    canceled = ctx.jobs.get(rec.id)
    assert canceled.status == JobStatus.canceled and 8 <= canceled.step < 400
    state_key = f"jobs/{rec.id}/resume/state.pt"
    assert ctx.store.head(state_key) is not None
    assert "field.pt" in {a.name for a in canceled.artifacts}

    # simulate a crashed worker: running, attempt 1, no lease; make the run short
    stopped_at = canceled.step
    ctx.jobs.records.apply(rec.id, lambda r: {
        "status": "running", "stage": Stage.optimizing, "cancel_requested": False, "finished_at": None,
        "spec": {**r.spec, "settings": {**r.spec["settings"], "steps": stopped_at + 3}}})
    assert run_job(rec.id, ctx) == "succeeded"
    done = ctx.jobs.get(rec.id)
    assert done.resumed_from_step == stopped_at and done.step == stopped_at + 3 and done.attempt == 2
    steps = [d["step"] for _, e, d in EventStream(ctx.jobs.redis).read(rec.id, count=2000) if e == "progress"]
    assert steps[-1] == stopped_at + 3 and stopped_at + 1 in steps


def test_reaper_requeues_running_job_with_dead_lease(ctx, service_model):
    rec, _ = ctx.jobs.create("alice", _params(service_model))
    ctx.jobs.lifecycle.start(rec.id, max_attempts=3)  # its worker died without a trace
    alive, _ = ctx.jobs.create("alice", _params(service_model))
    ctx.jobs.leases.acquire(alive.id, "w-alive", ttl=30)
    ctx.jobs.lifecycle.start(alive.id, max_attempts=3)
    sent: list[str] = []
    assert reap_expired(ctx.jobs, sent.append, grace_s=60) == []  # updated just now: within the grace
    # age both records past the grace period
    old = utcnow() - timedelta(seconds=120)
    for job_id in (rec.id, alive.id):
        ctx.jobs.redis.hset(job_key(job_id), "updated_at", json.dumps(old.isoformat()))
    assert reap_expired(ctx.jobs, sent.append, grace_s=60) == [rec.id]
    assert sent == [rec.id]
    requeued = ctx.jobs.get(rec.id)
    assert requeued.status == JobStatus.queued and requeued.stage == "requeued" and requeued.attempt == 1
    assert ctx.jobs.indexes.queue_position(rec.id) == 0
    assert ctx.jobs.get(alive.id).status == JobStatus.running


def test_empty_mesh_is_a_warning_not_a_failure(ctx, service_model):
    rec, _ = ctx.jobs.create("alice", _params(service_model, steps=2, mesh_threshold=999.0, outputs=["checkpoint", "mesh"]))
    assert run_job(rec.id, ctx) == "succeeded"
    done = ctx.jobs.get(rec.id)
    assert len(done.warnings) == 1 and "mesh" in done.warnings[0] and "999" in done.warnings[0]
    names = {a.name for a in done.artifacts}
    assert "field.pt" in names and not any(n.startswith("mesh.") for n in names)
    manifest = json.loads(ctx.store.get_bytes(f"jobs/{rec.id}/manifest.json"))
    assert manifest["warnings"] == done.warnings


def test_a_broken_model_fails_with_model_load_error_and_no_server_path(ctx, tmp_path):
    import shutil

    from sjc_engine.catalog import EMBEDDED_DIR
    from worker.context import WorkerContext

    root = tmp_path / "models"
    shutil.copytree(EMBEDDED_DIR, root / "broken")
    weights = root / "broken" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    settings = ctx.settings.model_copy(update={"model_dirs": [str(root)]})
    broken_ctx = WorkerContext.from_settings(settings, worker_id="test-host:2")
    spec = resolve_run({"prompt": "a red sphere", "model": "broken", "steps": 2}, settings.run_limits()).to_dict()
    rec, _ = broken_ctx.jobs.create("alice", spec)
    assert run_job(rec.id, broken_ctx) == "failed"
    err = broken_ctx.jobs.get(rec.id).error
    assert err.code == "model_load_error" and "broken" in err.message, err
    assert str(tmp_path) not in err.message and "unet/diffusion_pytorch_model.safetensors" in err.message


def test_a_worker_parent_keeps_its_busy_childrens_leases(ctx, service_model):
    """A child stuck in GIL-holding native code cannot renew its lease; its parent renews it for it."""
    import os
    import socket
    import subprocess
    import sys

    from worker.reaper import renew_children_leases

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    stranger = os.getppid()  # alive, but not our child
    try:
        host = socket.gethostname()
        ours, _ = ctx.jobs.create("alice", _params(service_model))
        theirs, _ = ctx.jobs.create("alice", _params(service_model))
        for rec, pid in ((ours, child.pid), (theirs, stranger)):
            assert ctx.jobs.leases.acquire(rec.id, f"{host}:{pid}", ttl=1.0)
            ctx.jobs.lifecycle.start(rec.id, max_attempts=3)
        assert renew_children_leases(ctx.jobs, ttl=60.0) == [ours.id]
        assert ctx.jobs.redis.pttl(f"sjc:job:{ours.id}:lease") > 30_000
        time.sleep(1.2)
        assert ctx.jobs.leases.alive(ours.id) and not ctx.jobs.leases.alive(theirs.id)
        assert reap_expired(ctx.jobs, lambda job_id: None, grace_s=0) == [theirs.id]
    finally:
        child.kill()
        child.wait()
