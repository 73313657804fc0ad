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
import random
import shutil
import time
from pathlib import Path
from typing import Any

from sjc_service.jobs import utcnow
from sjc_service.schemas import ALL_MESH_FORMATS, ALL_OUTPUTS, Artifact, JobError, JobRecord, JobStatus
from sjc_service.store import content_type_for

from worker.callbacks import JobCallbacks, job_prefix, resume_key
from worker.context import WorkerContext, get_context
from worker.lease import LeaseKeeper
from worker.models import get_denoiser

log = logging.getLogger(__name__)

# request params that are not SJCConfig settings, or that the worker sets itself
NOT_CONFIG = {"prompt", "model", "outputs", "mesh_formats", "device", "half", "checkpoint_every", "extra"}


class JobFailed(Exception):
    """A failure with a stable error code for the job record."""

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


def build_config(rec: JobRecord, ctx: WorkerContext) -> Any:
    """The run's SJCConfig: reference defaults < the model's defaults < the job's params < worker settings."""
    from sjc_engine.catalog import ModelNotFoundError, PromptError
    from sjc_engine.pipeline import build_config as engine_config

    params = rec.params
    model = params.get("model") or ctx.settings.default_model
    overrides = {k: v for k, v in params.items() if k not in NOT_CONFIG}
    settings = ctx.settings
    try:
        return engine_config(
            str(params.get("prompt", "")), model, settings.model_dirs, **overrides,
            checkpoint_every=settings.checkpoint_every, device=settings.worker_device, half=settings.worker_half,
        )
    except ModelNotFoundError as exc:
        raise JobFailed("model_not_found", str(exc)) from exc
    except PromptError as exc:
        raise JobFailed("invalid_prompt", str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise JobFailed("invalid_params", str(exc)) from exc


def take_job(ctx: WorkerContext, job_id: str) -> JobRecord | None:
    """Move the job to ``running`` (attempt + 1) if it is queued, or running with no live worker.

    Returns the running record, or ``None`` when this worker must not run it (finished, canceled,
    out of attempts). The caller holds the job's lease.
    """
    max_attempts = ctx.settings.max_attempts

    def change(rec: JobRecord) -> dict[str, Any] | None:
        if rec.cancel_requested:
            return {"status": JobStatus.canceled}
        if rec.attempt >= max_attempts:
            return {
                "status": JobStatus.failed,
                "error": JobError(code="too_many_attempts",
                                  message=f"the job was started {rec.attempt} times without finishing "
                                          f"(limit {max_attempts}); its worker probably crashed each time"),
            }
        params = rec.params
        if params.get("seed") is None:  # record the seed drawn, so a retry reproduces the same run
            params = {**params, "seed": random.randrange(2**31)}
        return {
            "status": JobStatus.running, "stage": "loading_model", "attempt": rec.attempt + 1,
            "started_at": rec.started_at or utcnow(), "params": params, "error": None,
        }

    new = ctx.jobs.transition_with(job_id, {JobStatus.queued, JobStatus.running}, change)
    if new is None or new.status != JobStatus.running:
        return None
    return new


def _fail(ctx: WorkerContext, job_id: str, code: str, message: str, artifacts: list[Artifact] | None = None) -> None:
    fields: dict[str, Any] = {"error": JobError(code=code, message=message[:2000])}
    if artifacts:
        fields["artifacts"] = artifacts
    ctx.jobs.transition(job_id, {JobStatus.running}, JobStatus.failed, **fields)


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
    if not ctx.jobs.acquire_lease(job_id, ctx.worker_id, s.lease_ttl_s):
        return f"skipped: running on {ctx.jobs.lease_owner(job_id)}"
    keeper = LeaseKeeper(ctx.jobs, job_id, ctx.worker_id, s.lease_ttl_s, s.cancel_poll_s)
    work_dir = Path(s.work_dir) / f"{job_id}-{ctx.worker_id.replace(':', '-')}"
    try:
        rec = take_job(ctx, job_id)
        if rec is None:
            final = ctx.jobs.get(job_id)
            return f"skipped: {final.status.value if final else 'gone'}"
        keeper.start()
        return _run(ctx, rec, keeper, work_dir, soft_timeout_exc)
    finally:
        keeper.stop()
        if not keeper.lost.is_set():
            ctx.jobs.release_lease(job_id, ctx.worker_id)
        shutil.rmtree(work_dir, ignore_errors=True)


def _run(ctx: WorkerContext, rec: JobRecord, keeper: LeaseKeeper, work_dir: Path,
         soft_timeout_exc: tuple[type[BaseException], ...]) -> str:
    job_id, s = rec.id, ctx.settings
    try:
        # 1. settings and model (cached in this process)
        config = build_config(rec, ctx)
        ctx.jobs.update(job_id, total_steps=config.steps)
        denoiser = get_denoiser(config.model, s.worker_device, s.worker_half, s.model_dirs)

        # 2. resume from the last uploaded state, if an earlier attempt left one
        resume = None
        state_path = work_dir / "download" / "state.pt"
        if ctx.store.get_file(resume_key(job_id), state_path):
            from sjc_engine.checkpoint import load_checkpoint

            resume = load_checkpoint(state_path)
            start = int(resume["step"])
            log.info("job %s: resuming from step %d (attempt %d)", job_id, start, rec.attempt)
            ctx.jobs.update(job_id, resumed_from_step=start, step=start)
        start = int(resume["step"]) if resume is not None else 0

        # 3. optimise and export
        ctx.jobs.update(job_id, stage="optimizing", step=start)
        cb = JobCallbacks(ctx, job_id, keeper, start, work_dir)
        outputs = rec.params.get("outputs") or list(ALL_OUTPUTS)
        mesh_formats = rec.params.get("mesh_formats") or list(ALL_MESH_FORMATS)
        from sjc_engine.pipeline import generate

        out_dir = work_dir / "out"
        result = generate(config, out_dir, callbacks=cb, resume=resume, denoiser=denoiser,
                          outputs=outputs, mesh_formats=mesh_formats, model_dirs=s.model_dirs)
        if keeper.lost.is_set():
            return "lost"

        # 4. upload; manifest last; then the status
        ctx.jobs.update(job_id, stage="uploading", step=result.steps_done)
        artifacts = _upload_outputs(ctx, job_id, out_dir, cb.uploaded)
        if result.stopped:
            ok = ctx.jobs.transition(job_id, {JobStatus.running}, JobStatus.canceled, artifacts=artifacts,
                                     step=result.steps_done)
            return "canceled" if ok else "lost"
        body = json.dumps(_manifest(rec, result, artifacts), indent=2).encode()
        info = ctx.store.put_bytes(job_prefix(job_id) + "manifest.json", body, "application/json")
        artifacts.append(Artifact(name="manifest.json", key=info.key, content_type=info.content_type,
                                  size=info.size, sha256=hashlib.sha256(body).hexdigest()))
        ok = ctx.jobs.transition(job_id, {JobStatus.running}, JobStatus.succeeded, artifacts=artifacts,
                                 progress=100.0, step=result.steps_done, stage="done", eta_s=0.0,
                                 warnings=list(getattr(result, "warnings", []) or []))
        return "succeeded" if ok else "lost"
    except JobFailed as exc:
        _fail(ctx, job_id, exc.code, exc.message)
        return "failed"
    except soft_timeout_exc as exc:  # type: ignore[misc]
        _fail(ctx, job_id, "time_limit", f"the job ran past the time limit of {s.soft_time_limit_s} s ({exc!r})")
        return "failed"
    except Exception as exc:  # noqa: BLE001 - any engine error ends the job, not the worker
        log.exception("job %s failed", job_id)
        if keeper.lost.is_set():
            return "lost"
        _fail(ctx, job_id, _error_code(exc), f"{type(exc).__name__}: {exc}",
              _partial_artifacts(ctx, job_id, work_dir / "out"))
        return "failed"


def _error_code(exc: Exception) -> str:
    from sjc_engine.catalog import PromptError
    from sjc_engine.export.mesh import EmptyMeshError

    if isinstance(exc, EmptyMeshError):
        return "empty_mesh"
    if isinstance(exc, PromptError):
        return "invalid_prompt"
    return "engine_error"


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
        key = prefix + name
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


def _manifest(rec: JobRecord, result: Any, artifacts: list[Artifact]) -> dict[str, Any]:
    return {
        "job_id": rec.id,
        "prompt": result.config.prompt,
        "model": result.config.model,
        "params": rec.params,
        "config": result.config.to_dict(),
        "steps_done": result.steps_done,
        "warnings": list(getattr(result, "warnings", []) or []),
        "attempt": rec.attempt,
        "created_at": rec.created_at.isoformat(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifacts": [a.model_dump(exclude={"url"}) for a in artifacts],
    }
