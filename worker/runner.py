"""The life of one job on a worker: take it, run SJC, upload the results, record how it ended.

Safe to run twice for the same job (Celery redelivers with ``acks_late``; the reaper re-enqueues
crashed jobs): a finished job is skipped, a job whose lease another worker holds is skipped, and
a job left half-done by a dead worker resumes from its last uploaded state.

Order of writes for a successful job: outputs, then ``manifest.json`` (the "done" marker), then
the record's ``succeeded`` status: a client that sees ``succeeded`` always finds every file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

from sjc_engine.run_spec import RunSpec, RunSpecError
from sjc_service.keyspace import MANIFEST, job_prefix, object_key, resume_key
from sjc_service.schemas import Artifact, JobRecord
from sjc_service.store import StoreUnavailable, content_type_for
from sjc_service.views import public_params

from worker.callbacks import JobCallbacks
from worker.context import WorkerContext, get_context
from worker.lease import LeaseKeeper
from worker.models import get_denoiser
from worker.outage import clear_outages, enqueue_later, requeue_after_outage

log = logging.getLogger(__name__)
THUMBNAIL = "thumbnail.png"


class JobFailed(Exception):
    """A failure with a stable error code and a message fit for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_config(rec: JobRecord, ctx: WorkerContext) -> tuple[RunSpec, Any]:
    """The job's stored spec, checked again without the catalog, and its config with this worker's
    device, precision and checkpoint settings."""
    s = ctx.settings
    try:
        spec = RunSpec.from_dict(rec.spec)
        return spec, spec.config(device=s.worker_device, half=s.worker_half, checkpoint_every=s.checkpoint_every)
    except RunSpecError as exc:
        raise JobFailed(exc.code, exc.message) from exc


def run_job(
    job_id: str,
    ctx: WorkerContext | None = None,
    soft_timeout_exc: tuple[type[BaseException], ...] = (),
) -> str:
    """Run job ``job_id`` to its end; returns what happened (``"succeeded"``, ``"canceled"``,
    ``"failed"``, ``"lost"`` or ``"skipped: ..."``)."""
    ctx = ctx or get_context()
    s = ctx.settings
    rec = ctx.jobs.get(job_id)
    if rec is None:
        return "skipped: no such job"
    if rec.status.finished:
        return f"skipped: already {rec.status.value}"
    if not ctx.jobs.leases.acquire(job_id, ctx.worker_id, s.lease_ttl_s):
        return f"skipped: running on {ctx.jobs.leases.holder(job_id)}"
    keeper = LeaseKeeper(ctx.jobs, job_id, ctx.worker_id, s.lease_ttl_s, s.cancel_poll_s)
    work_dir = Path(s.work_dir) / f"{job_id}-{ctx.worker_id.replace(':', '-')}"
    try:
        rec = ctx.jobs.lifecycle.start(job_id, s.max_attempts)
        if rec is None or not rec.status == "running":
            final = ctx.jobs.get(job_id)
            return f"skipped: {final.status.value if final else 'gone'}"
        keeper.start()
        return _run(ctx, rec, keeper, work_dir, soft_timeout_exc)
    finally:
        keeper.stop()
        if not keeper.lost.is_set():
            ctx.jobs.leases.release(job_id, ctx.worker_id)
        shutil.rmtree(work_dir, ignore_errors=True)


def _run(ctx: WorkerContext, rec: JobRecord, keeper: LeaseKeeper, work_dir: Path,
         soft_timeout_exc: tuple[type[BaseException], ...]) -> str:
    job_id, s = rec.id, ctx.settings
    life = ctx.jobs.lifecycle
    try:
        # 1. the stored spec and the model (cached in this process)
        spec, config = run_config(rec, ctx)
        denoiser = _denoiser(spec, ctx)

        # 2. resume from the last uploaded state, if an earlier attempt left one
        resume = None
        state_path = work_dir / "download" / "state.pt"
        if ctx.store.get_file(resume_key(job_id), state_path):
            from sjc_engine.checkpoint import load_checkpoint

            resume = load_checkpoint(state_path)
            log.info("job %s: resuming from step %d (attempt %d)", job_id, int(resume["step"]), rec.attempt)
        resumed_from = int(resume["step"]) if resume is not None else None
        if life.optimize(job_id, config.steps, resumed_from) is None:
            return "lost"

        # 3. optimise and export (the stage turns to exporting when the optimiser is done)
        cb = JobCallbacks(ctx, job_id, keeper, resumed_from or 0, work_dir)
        from sjc_engine.pipeline import generate

        out_dir = work_dir / "out"
        result = generate(config, out_dir, callbacks=cb, resume=resume, denoiser=denoiser,
                          outputs=spec.outputs, mesh_formats=spec.mesh_formats)
        if keeper.lost.is_set():
            return "lost"

        # 4. upload; manifest last; then the status
        if life.upload(job_id) is None:
            return "lost"
        artifacts = _upload_outputs(ctx, job_id, out_dir, cb.uploaded)
        if result.stopped:
            return "canceled" if life.stop(job_id, artifacts, result.steps_done) is not None else "lost"
        body = json.dumps(_manifest(rec, spec, result, artifacts), indent=2).encode()
        info = ctx.store.put_bytes(object_key(job_id, MANIFEST), body, "application/json")
        artifacts.append(Artifact(name=MANIFEST, key=info.key, content_type=info.content_type,
                                  size=info.size, sha256=hashlib.sha256(body).hexdigest()))
        done = life.succeed(job_id, artifacts, list(result.warnings))
        clear_outages(ctx.jobs, job_id)
        return "succeeded" if done is not None else "lost"
    except JobFailed as exc:
        life.fail(job_id, exc.code, exc.message)
        return "failed"
    except soft_timeout_exc as exc:  # type: ignore[misc]
        life.fail(job_id, "time_limit", f"the job ran past the time limit of {s.soft_time_limit_s} s ({exc!r})")
        return "failed"
    except StoreUnavailable as exc:  # after botocore's retries: back to the queue, not failed
        if keeper.lost.is_set():
            return "lost"
        return requeue_after_outage(ctx.jobs, job_id, exc, partial(enqueue_later, settings=s))
    except Exception as exc:  # noqa: BLE001 - any engine error ends the job, not the worker
        log.exception("job %s failed", job_id)
        if keeper.lost.is_set():
            return "lost"
        code, message = _client_error(exc)
        life.fail(job_id, code, message, _partial_artifacts(ctx, job_id, work_dir / "out"))
        return "failed"


def _denoiser(spec: RunSpec, ctx: WorkerContext) -> Any:
    """The job's model, loaded or cached, with this process's torch threads set to what it recommends
    (``SJC_THREADS`` still wins; :mod:`sjc_engine.threads`)."""
    from sjc_engine.catalog import ModelNotFoundError, resolve_model
    from sjc_engine.threads import set_torch_threads

    s = ctx.settings
    try:
        set_torch_threads(torch_threads=resolve_model(spec.model, s.model_dirs, allow_paths=False).torch_threads)
        return get_denoiser(spec.model, s.worker_device, s.worker_half, s.model_dirs)
    except ModelNotFoundError as exc:  # the API found it; this worker's model folders do not have it
        log.error("job model not found on this worker: %s", exc)
        raise JobFailed("model_not_found", f"model {spec.model!r} is not installed on the worker") from exc


def _client_error(exc: Exception) -> tuple[str, str]:
    """The job error code and a message fit for the client (no server paths for a broken model)."""
    from sjc_engine.denoisers.errors import ModelLoadError

    if isinstance(exc, ModelLoadError):
        return "model_load_error", exc.public_message
    return "engine_error", f"{type(exc).__name__}: {exc}"


def _partial_artifacts(ctx: WorkerContext, job_id: str, out_dir: Path) -> list[Artifact]:
    """Best effort: keep what a failed run wrote (field, video, previews) for the user to inspect."""
    try:
        return _upload_outputs(ctx, job_id, out_dir, {})
    except Exception:  # noqa: BLE001 - the job's error matters more than its partial files
        log.exception("job %s: could not upload partial outputs", job_id)
        return []


def _upload_outputs(ctx: WorkerContext, job_id: str, out_dir: Path, already: dict[str, int]) -> list[Artifact]:
    """Upload every file under ``out_dir`` to ``jobs/{id}/`` (previews uploaded during the run are kept)."""
    artifacts: list[Artifact] = []
    prefix = job_prefix(job_id)
    files = sorted(p for p in out_dir.rglob("*") if p.is_file()) if out_dir.is_dir() else []
    for path in files:
        name = path.relative_to(out_dir).as_posix()
        key = object_key(job_id, name)
        ctype = content_type_for(name)
        if key not in already or already[key] != path.stat().st_size:
            ctx.store.put_file(key, path, ctype)
        artifacts.append(Artifact(name=name, key=key, content_type=ctype, size=path.stat().st_size,
                                  sha256=sha256_file(path)))
    listed = {a.key for a in artifacts}
    for obj in ctx.store.list(prefix + "previews/"):  # previews of earlier attempts, or uploaded live only
        if obj.key not in listed:
            artifacts.append(Artifact(name=obj.key[len(prefix):], key=obj.key, content_type=obj.content_type,
                                      size=obj.size))
    return artifacts


def _manifest(rec: JobRecord, spec: RunSpec, result: Any, artifacts: list[Artifact]) -> dict[str, Any]:
    names = {a.name for a in artifacts}
    return {
        "job_id": rec.id,
        "prompt": spec.prompt,
        "model": spec.model,
        "params": public_params(spec.to_dict()),
        "config": result.config.to_dict(),
        "steps_done": result.steps_done,
        "warnings": list(result.warnings),
        "attempt": rec.attempt,
        "created_at": rec.created_at.isoformat(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "thumbnail": THUMBNAIL if THUMBNAIL in names else None,
        "artifacts": [a.model_dump(exclude={"url"}) for a in artifacts],
    }
