"""The engine's callbacks for a service job: progress to Redis, previews and resumable state to the store."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

from sjc_engine.callbacks import Callbacks, StepReport
from sjc_service.keyspace import object_key, resume_key

from worker.context import WorkerContext
from worker.lease import LeaseKeeper
from worker.outage import best_effort

log = logging.getLogger(__name__)


def png_bytes(image: Any) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class JobCallbacks(Callbacks):
    """Hooks of one job's optimiser loop.

    Args:
        ctx: the worker's handles.
        job_id: the job.
        keeper: the job's lease keeper (its cancel/lost flags stop the loop).
        start_step: the step this attempt starts from (0, or the resumed step).
        work_dir: scratch folder for the resumable state before upload.
    """

    def __init__(self, ctx: WorkerContext, job_id: str, keeper: LeaseKeeper, start_step: int, work_dir: Path) -> None:
        self.ctx, self.job_id, self.keeper = ctx, job_id, keeper
        self.start_step = start_step
        self.work_dir = work_dir
        self.t0 = time.monotonic()
        self.last_publish = float("-inf")
        self.last_step = start_step
        self.uploaded: dict[str, int] = {}  # object key -> size, of previews uploaded during the run

    # ---- progress ------------------------------------------------------------------------------

    def on_step(self, report: StepReport) -> None:
        self.last_step = report.step
        if report.preview is not None:
            self._upload_preview(report)
        now = time.monotonic()
        first = report.step == self.start_step + 1
        if not (first or report.step >= report.total or now - self.last_publish >= self.ctx.settings.progress_interval_s):
            return
        self.last_publish = now
        done_here = report.step - self.start_step
        rate = done_here / max(now - self.t0, 1e-6)  # steps per second in this attempt
        eta = (report.total - report.step) / rate if rate > 0 else None
        progress = round(min(99.0, 100.0 * report.step / max(report.total, 1)), 2)
        eta_s = None if eta is None else round(eta, 1)
        rec = best_effort(self.ctx.jobs.lifecycle.progress, self.job_id, report.step, report.total, progress, eta_s,
                          what=f"job {self.job_id}: progress at step {report.step}")
        if rec is None:  # a step replayed after a resume (at or below the one shown), or the job moved on
            return
        data = {
            "step": rec.step,
            "total": rec.total_steps,
            "progress": rec.progress,
            "losses": {k: float(v) for k, v in report.losses.items()},
            "sigma": float(report.sigma),
            "eta_s": eta_s,
            "steps_per_s": round(rate, 3),
        }
        best_effort(self.ctx.events.publish, self.job_id, "progress", data, what=f"job {self.job_id}: progress event")

    def _upload_preview(self, report: StepReport) -> None:
        name = f"previews/step_{report.step:06d}.png"
        key = object_key(self.job_id, name)
        try:
            info = self.ctx.store.put_bytes(key, png_bytes(report.preview), "image/png")
        except Exception:  # noqa: BLE001 - a lost preview is not worth failing the job
            log.exception("job %s: preview upload failed", self.job_id)
            return
        self.uploaded[key] = info.size
        best_effort(self.ctx.events.publish, self.job_id, "preview", {"step": report.step, "name": name, "key": key},
                    what=f"job {self.job_id}: preview event")

    def on_export(self, steps_done: int) -> None:
        """The optimiser is done: the job's stage turns to ``exporting``."""
        best_effort(self.ctx.jobs.lifecycle.export, self.job_id, steps_done, what=f"job {self.job_id}: exporting stage")

    # ---- cancel --------------------------------------------------------------------------------

    def should_stop(self) -> bool:
        return self.keeper.should_stop

    # ---- resumable state -----------------------------------------------------------------------

    def on_checkpoint(self, state: dict[str, Any], step: int) -> None:
        """Write the state and upload it to ``jobs/{id}/resume/state.pt`` (a later attempt resumes from it)."""
        if self.keeper.lost.is_set():
            return  # another worker owns the job now; never overwrite its state
        from sjc_engine.checkpoint import save_checkpoint

        path = save_checkpoint(state, self.work_dir / "resume" / "state.pt")
        self.ctx.store.put_file(resume_key(self.job_id), path, "application/octet-stream")
        log.info("job %s: resumable state at step %d uploaded", self.job_id, step)
