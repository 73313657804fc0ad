"""A job's life: its status and stage, and the named transitions that alone may change them.

::

    queued ──start──> running: loading_model ──optimize──> optimizing ──export──> exporting ──upload──> uploading
      ^  (stage queued,                           (progress: optimizing)   (a stopped run: optimizing ──upload──>)
      |   or requeued)                                                                          │
      └──────requeue─── running (any stage; its worker died) ─fail──> failed              succeed──> succeeded: done
                         running (any stage) ──stop──> canceled   queued ──cancel──> canceled

Every transition is one atomic change of the record (``records.apply``, a ``WATCH``/``MULTI``
transaction that also moves the indexes and publishes the ``state`` event). A transition whose job is
not in one of its ``from`` stages is refused: it changes nothing and returns ``None`` (a worker that
lost its job to another, a cancel racing a finish). :data:`TRANSITIONS` is the whole graph.

Progress is monotonic: after a resume from an earlier checkpoint the step shown never goes back; the
replayed steps are not reported until the run passes the step it had shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Protocol


class JobStatus(str, Enum):
    """Life cycle: queued -> running -> succeeded | failed | canceled (running -> queued on a crash)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def finished(self) -> bool:
        return self in TERMINAL


class Stage(str, Enum):
    """Finer than the status: where a job is now.

    ``requeueing`` is never stored: the API shows it for a running job whose worker stopped renewing
    its lease, until a reaper puts the job back in the queue (``requeued``).
    """

    queued = "queued"
    requeued = "requeued"
    loading_model = "loading_model"
    optimizing = "optimizing"
    exporting = "exporting"
    uploading = "uploading"
    done = "done"
    failed = "failed"
    canceled = "canceled"
    requeueing = "requeueing"


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled})
ACTIVE = frozenset({JobStatus.queued, JobStatus.running})
WAITING = frozenset({Stage.queued, Stage.requeued})
RUNNING = frozenset({Stage.loading_model, Stage.optimizing, Stage.exporting, Stage.uploading})


@dataclass(frozen=True)
class Transition:
    """A named move: from any of ``sources`` to ``status`` / ``stage``."""

    name: str
    sources: frozenset[Stage]
    status: JobStatus
    stage: Stage


TRANSITIONS: dict[str, Transition] = {t.name: t for t in (
    Transition("start", WAITING | RUNNING, JobStatus.running, Stage.loading_model),  # RUNNING: a dead worker's job
    Transition("optimize", frozenset({Stage.loading_model}), JobStatus.running, Stage.optimizing),
    Transition("progress", frozenset({Stage.optimizing}), JobStatus.running, Stage.optimizing),
    Transition("export", frozenset({Stage.optimizing}), JobStatus.running, Stage.exporting),
    Transition("upload", frozenset({Stage.optimizing, Stage.exporting}), JobStatus.running, Stage.uploading),
    Transition("succeed", frozenset({Stage.uploading}), JobStatus.succeeded, Stage.done),
    Transition("fail", RUNNING, JobStatus.failed, Stage.failed),
    Transition("give_up", WAITING | RUNNING, JobStatus.failed, Stage.failed),  # out of attempts
    Transition("stop", RUNNING, JobStatus.canceled, Stage.canceled),  # a running job's cancel, by its worker
    Transition("cancel", WAITING, JobStatus.canceled, Stage.canceled),  # a queued job's cancel, at once
    Transition("requeue", RUNNING, JobStatus.queued, Stage.requeued),
)}


class IllegalTransition(ValueError):
    """A move that :data:`TRANSITIONS` does not allow from the job's stage."""


def check_move(name: str, stage: Stage | str) -> Transition:
    """The transition ``name`` if it may leave ``stage``; raise :class:`IllegalTransition` otherwise."""
    transition = TRANSITIONS[name]
    if Stage(stage) not in transition.sources:
        raise IllegalTransition(f"{name!r} cannot leave stage {Stage(stage).value!r}")
    return transition


class Records(Protocol):
    """What the lifecycle needs of the record store (:class:`sjc_service.records.JobRecords`)."""

    def apply(self, job_id: str, change: Callable[[Any], dict[str, Any] | None]) -> Any: ...

    def get(self, job_id: str) -> Any: ...


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Lifecycle:
    """The named transitions of jobs kept in ``records``; each returns the new record or ``None`` (refused).

    Args:
        records: the record store.
    """

    def __init__(self, records: Records) -> None:
        self.records = records

    def _move(self, job_id: str, name: str, change: Callable[[Any], dict[str, Any] | None] | None = None) -> Any:
        def guarded(rec: Any) -> dict[str, Any] | None:
            try:
                transition = check_move(name, rec.stage)
            except IllegalTransition:
                return None
            fields = {} if change is None else change(rec)
            if fields is None:
                return None
            return {"status": transition.status, "stage": transition.stage, **fields}

        return self.records.apply(job_id, guarded)

    # ---- the worker's moves ----------------------------------------------------------------------

    def start(self, job_id: str, max_attempts: int) -> Any:
        """Take a queued job (or a running one whose worker died): attempt + 1, stage ``loading_model``.

        A job with a cancel pending is canceled instead, and one started ``max_attempts`` times already
        fails ``too_many_attempts``; both return the finished record (check its status).
        """
        def change(rec: Any) -> dict[str, Any] | None:
            if rec.cancel_requested:
                return None
            if rec.attempt >= max_attempts:
                return None
            return {"attempt": rec.attempt + 1, "started_at": rec.started_at or utcnow(), "error": None}

        started = self._move(job_id, "start", change)
        if started is not None:
            return started
        return (self._move(job_id, "stop", lambda rec: {} if rec.cancel_requested else None)
                or self._move(job_id, "cancel", lambda rec: {} if rec.cancel_requested else None)
                or self._move(job_id, "give_up", lambda rec: self._gave_up(rec, max_attempts)))

    @staticmethod
    def _gave_up(rec: Any, max_attempts: int) -> dict[str, Any] | None:
        if rec.attempt < max_attempts:
            return None
        return {"error": {"code": "too_many_attempts",
                          "message": f"the job was started {rec.attempt} times without finishing (limit "
                                     f"{max_attempts}); its worker probably crashed each time"}}

    def optimize(self, job_id: str, total_steps: int, resumed_from_step: int | None) -> Any:
        """The model is loaded: stage ``optimizing`` (the step never goes back on a resume)."""
        def change(rec: Any) -> dict[str, Any]:
            start = resumed_from_step or 0
            return {"total_steps": total_steps, "resumed_from_step": resumed_from_step, "step": max(rec.step, start)}

        return self._move(job_id, "optimize", change)

    def progress(self, job_id: str, step: int, total: int, progress: float, eta_s: float | None) -> Any:
        """Record step ``step`` of ``total``; refused (``None``) for a step at or below the one shown."""
        def change(rec: Any) -> dict[str, Any] | None:
            if step <= rec.step:
                return None
            return {"step": step, "total_steps": total, "progress": max(rec.progress, progress), "eta_s": eta_s}

        return self._move(job_id, "progress", change)

    def export(self, job_id: str, steps_done: int) -> Any:
        """Optimisation done: stage ``exporting`` (video, mesh, previews)."""
        return self._move(job_id, "export", lambda rec: {"step": max(rec.step, steps_done), "eta_s": None})

    def upload(self, job_id: str) -> Any:
        """Files written: stage ``uploading``."""
        return self._move(job_id, "upload")

    def succeed(self, job_id: str, artifacts: list[Any], warnings: list[str]) -> Any:
        """Every file and the manifest are in the store: ``succeeded``, progress 100."""
        return self._move(job_id, "succeed", lambda rec: {
            "artifacts": artifacts, "warnings": warnings, "progress": 100.0, "eta_s": 0.0})

    def fail(self, job_id: str, code: str, message: str, artifacts: Iterable[Any] = ()) -> Any:
        """The run failed with a stable error ``code``; keeps whatever ``artifacts`` were uploaded."""
        fields: dict[str, Any] = {"error": {"code": code, "message": message[:2000]}}
        if artifacts:
            fields["artifacts"] = list(artifacts)
        return self._move(job_id, "fail", lambda rec: fields)

    def stop(self, job_id: str, artifacts: list[Any], steps_done: int = 0) -> Any:
        """The worker stopped a running job on its cancel: ``canceled``, keeping its partial files."""
        return self._move(job_id, "stop", lambda rec: {"artifacts": artifacts, "step": max(rec.step, steps_done)})

    def requeue(self, job_id: str, may_requeue: Callable[[Any], bool]) -> Any:
        """Back to the queue (a reaper's move for a job whose worker died), if ``may_requeue(record)``."""
        return self._move(job_id, "requeue", lambda rec: {"eta_s": None} if may_requeue(rec) else None)

    def stale(self, grace_s: float) -> Callable[[Any], bool]:
        """A ``may_requeue`` test: the record was not updated for ``grace_s`` seconds."""
        return lambda rec: utcnow() - rec.updated_at >= timedelta(seconds=grace_s)

    # ---- the client's move -----------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> tuple[Any, bool]:
        """Ask for a cancel; returns ``(record, accepted)`` (record ``None``: no such job).

        A queued job is canceled at once; a running job gets ``cancel_requested`` and its worker stops
        it within a few seconds (a repeated request is accepted again). A finished job is not
        accepted (HTTP 409).
        """
        canceled = self._move(job_id, "cancel", lambda rec: {"cancel_requested": True})
        if canceled is not None:
            return canceled, True
        flagged = self.records.apply(
            job_id, lambda rec: {"cancel_requested": True} if Stage(rec.stage) in RUNNING else None)
        if flagged is not None:
            return flagged, True
        return self.records.get(job_id), False
