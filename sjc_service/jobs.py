"""Job records in Redis: creation (with idempotency keys), atomic state transitions, listing, leases.

Layout (all keys prefixed ``sjc:``):

- ``job:{id}``: hash, one JSON-encoded value per :class:`JobRecord` field.
- ``owner:{owner}:jobs``: sorted set of the owner's job ids by creation time (newest-first pages).
- ``owner:{owner}:active``: set of the owner's queued and running jobs (concurrency caps).
- ``queue``: sorted set of queued job ids by creation time (queue position).
- ``running``: set of running job ids (the worker's reaper scans it).
- ``counts``: hash status -> number of jobs (``/metrics``).
- ``durations``: hash of cumulative run-time histogram counters of finished jobs (``/metrics``).
- ``idem:{owner}:{key}``: ``{"job_id", "request_hash"}`` of an ``Idempotency-Key``, with a TTL.
- ``job:{id}:lease``: the id of the worker running the job, with a TTL it keeps renewing.
- ``job:{id}:events``: the job's event stream (:mod:`sjc_service.events`).

Every status change goes through one optimistic transaction (``WATCH``/``MULTI``) that also moves
the job between the index sets and publishes a ``"state"`` event (and ``"done"`` when it finishes),
so readers never see a status without its event or index entry.
"""

from __future__ import annotations

import json
import secrets
import time
import base64
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import redis
from pydantic_core import to_jsonable_python

from sjc_service.events import DEFAULT_MAXLEN, FINISHED_STREAM_TTL_S, events_key, xadd_event
from sjc_service.schemas import ACTIVE, TERMINAL, JobRecord, JobStatus

PREFIX = "sjc:"
QUEUE_KEY = PREFIX + "queue"
RUNNING_KEY = PREFIX + "running"
COUNTS_KEY = PREFIX + "counts"
DURATIONS_KEY = PREFIX + "durations"
# upper bounds (seconds) of the run-time histogram of finished jobs, cumulative like Prometheus' ``le``
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ActiveJobLimit(RuntimeError):
    """The owner already has ``limit`` queued or running jobs (HTTP 429)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the owner already has {limit} queued or running jobs")
        self.limit = limit


class IdempotencyConflict(ValueError):
    """The ``Idempotency-Key`` was used before with a different request body (HTTP 422/409)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Idempotency-Key already used for job {job_id} with a different request")
        self.job_id = job_id


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def lease_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:lease"


def owner_jobs_key(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:jobs"


def owner_active_key(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:active"


def idem_key(owner: str, key: str) -> str:
    return f"{PREFIX}idem:{owner}:{key}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_job_id() -> str:
    """Time-ordered id: 12 hex digits of milliseconds, then 16 random hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(to_jsonable_python(v)) for k, v in fields.items()}


def _decode(raw: dict[str, str]) -> JobRecord:
    return JobRecord.model_validate({k: json.loads(v) for k, v in raw.items()})


def _score(rec: JobRecord) -> int:
    return int(rec.created_at.timestamp() * 1000)


def _encode_cursor(score: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{int(score)}:{job_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, job_id = text.split(":", 1)
        return int(score), job_id
    except Exception as exc:  # noqa: BLE001 - any garbage is the same client error
        raise ValueError(f"invalid cursor {cursor!r}") from exc


class JobStore:
    """Job records and their indexes in Redis.

    Args:
        redis: a client created with ``decode_responses=True`` (see :mod:`sjc_service.connections`).
        events_maxlen: approximate cap of each job's event stream.
    """

    def __init__(self, redis: redis.Redis, events_maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.events_maxlen = events_maxlen
        self._renew = redis.register_script(_RENEW_LUA)
        self._release = redis.register_script(_RELEASE_LUA)

    # ---- create / read -------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        params: dict[str, Any],
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        idempotency_ttl_s: int = 24 * 3600,
        max_active: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """Create a queued job; returns ``(record, created)``.

        With ``idempotency_key``, a second call with the same key returns the first job and
        ``created=False``; with a different ``request_hash`` it raises :class:`IdempotencyConflict`.
        With ``max_active``, raises :class:`ActiveJobLimit` when the owner already has that many
        queued or running jobs; the check and the insert are one optimistic transaction, so
        concurrent requests cannot overshoot the cap.
        """
        job_id = new_job_id()
        if idempotency_key is not None:
            ikey = idem_key(owner, idempotency_key)
            claim = json.dumps({"job_id": job_id, "request_hash": request_hash})
            if not self.redis.set(ikey, claim, nx=True, ex=idempotency_ttl_s):
                return self._existing_for_key(ikey, request_hash), False
        now = utcnow()
        rec = JobRecord(
            id=job_id,
            owner=owner,
            status=JobStatus.queued,
            stage="queued",
            total_steps=int(params.get("steps") or 0),
            params=params,
            created_at=now,
            updated_at=now,
        )
        score = _score(rec)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(owner_active_key(owner))
                    if max_active is not None and pipe.scard(owner_active_key(owner)) >= max_active:
                        pipe.unwatch()
                        if idempotency_key is not None:
                            self.redis.delete(idem_key(owner, idempotency_key))
                        raise ActiveJobLimit(max_active)
                    pipe.multi()
                    pipe.hset(job_key(job_id), mapping=_encode(rec.model_dump()))
                    pipe.zadd(owner_jobs_key(owner), {job_id: score})
                    pipe.sadd(owner_active_key(owner), job_id)
                    pipe.zadd(QUEUE_KEY, {job_id: score})
                    pipe.hincrby(COUNTS_KEY, JobStatus.queued.value, 1)
                    xadd_event(pipe, job_id, "state", self._state_data(rec), self.events_maxlen)
                    pipe.execute()
                    return rec, True
                except redis.WatchError:
                    continue

    def _existing_for_key(self, ikey: str, request_hash: str | None) -> JobRecord:
        deadline = time.monotonic() + 2.0
        while True:
            raw = self.redis.get(ikey)
            if raw is not None:
                claim = json.loads(raw)
                if claim.get("request_hash") != request_hash:
                    raise IdempotencyConflict(claim["job_id"])
                rec = self.get(claim["job_id"])
                if rec is not None:
                    return rec
            if time.monotonic() > deadline:  # the first request claimed the key but never wrote its job
                raise RuntimeError(f"idempotency key {ikey} points to a job that does not exist")
            time.sleep(0.02)

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(job_key(job_id))
        return _decode(raw) if raw else None

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        ids = list(job_ids)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(job_key(job_id))
        return [_decode(raw) if raw else None for raw in pipe.execute()]

    def list(
        self, owner: str, status: JobStatus | str | None = None, cursor: str | None = None, limit: int = 20
    ) -> tuple[list[JobRecord], str | None]:
        """The owner's jobs, newest first; returns ``(page, next_cursor)`` (``None`` on the last page).

        ``cursor`` is the opaque string a previous call returned; raises ``ValueError`` on garbage.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        want = JobStatus(status) if status is not None else None
        max_score: str | int = "+inf"
        after: tuple[int, str] | None = None
        if cursor:
            after = _decode_cursor(cursor)
            max_score = after[0]
        found: list[tuple[JobRecord, float]] = []
        offset, batch = 0, max(2 * limit, 50)
        key = owner_jobs_key(owner)
        while len(found) <= limit:
            items = self.redis.zrevrangebyscore(key, max_score, "-inf", start=offset, num=batch, withscores=True)
            if not items:
                break
            offset += len(items)
            # same-score members come in reverse lexicographic order: skip those at or before the cursor
            kept = [(m, s) for m, s in items if after is None or int(s) < after[0] or m < after[1]]
            for (_member, score), rec in zip(kept, self.get_many(m for m, _ in kept)):
                if rec is None or (want is not None and rec.status != want):
                    continue
                found.append((rec, score))
                if len(found) > limit:
                    break
        page = [rec for rec, _ in found[:limit]]
        next_cursor = _encode_cursor(found[limit - 1][1], page[-1].id) if len(found) > limit else None
        return page, next_cursor

    # ---- changes -------------------------------------------------------------------------------

    def update(self, job_id: str, **fields: Any) -> bool:
        """Set fields of an existing job (any status); ``False`` if there is no such job."""
        return self._apply(job_id, None, lambda _rec: fields) is not None

    def transition(self, job_id: str, allowed_from: Iterable[JobStatus | str], to: JobStatus | str, **fields: Any) -> bool:
        """Atomically move a job to ``to`` if its status is in ``allowed_from``; ``False`` otherwise.

        Moving to a finished status sets ``finished_at`` and ``stage`` (unless given).
        """
        to = JobStatus(to)
        return self.transition_with(job_id, allowed_from, lambda _rec: {"status": to, **fields}) is not None

    def transition_with(
        self,
        job_id: str,
        allowed_from: Iterable[JobStatus | str] | None,
        change: Callable[[JobRecord], dict[str, Any] | None],
    ) -> JobRecord | None:
        """Like :meth:`transition`, with the new fields computed from the current record inside the
        transaction (e.g. ``attempt + 1``). ``change`` returning ``None`` aborts; returns the new record.
        """
        allowed = None if allowed_from is None else {JobStatus(s) for s in allowed_from}
        return self._apply(job_id, allowed, change)

    def _apply(
        self,
        job_id: str,
        allowed: set[JobStatus] | None,
        change: Callable[[JobRecord], dict[str, Any] | None],
    ) -> JobRecord | None:
        key = job_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hgetall(key)
                    if not raw:
                        return None
                    old = _decode(raw)
                    if allowed is not None and old.status not in allowed:
                        return None
                    fields = change(old)
                    if fields is None:
                        return None
                    fields = dict(fields)
                    now = utcnow()
                    fields["updated_at"] = now
                    new_status = JobStatus(fields.get("status", old.status))
                    if new_status != old.status:
                        fields["status"] = new_status
                        if new_status in TERMINAL:
                            fields.setdefault("finished_at", now)
                            fields.setdefault("stage", new_status.value)
                            fields.setdefault("eta_s", None)
                        elif new_status == JobStatus.queued:
                            fields.setdefault("stage", "queued")
                    new = JobRecord.model_validate({**old.model_dump(), **fields})
                    pipe.multi()
                    pipe.hset(key, mapping=_encode({k: getattr(new, k) for k in fields}))
                    if new.status != old.status:
                        self._move_indexes(pipe, old, new)
                    if new.status != old.status or new.stage != old.stage:
                        xadd_event(pipe, job_id, "state", self._state_data(new), self.events_maxlen)
                    if new.status != old.status and new.status in TERMINAL:
                        if new.started_at is not None and new.finished_at is not None:
                            self._record_duration(pipe, (new.finished_at - new.started_at).total_seconds())
                        xadd_event(pipe, job_id, "done", new.model_dump(mode="json"), self.events_maxlen)
                        pipe.expire(events_key(job_id), FINISHED_STREAM_TTL_S)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue

    def _move_indexes(self, pipe: Any, old: JobRecord, new: JobRecord) -> None:
        pipe.hincrby(COUNTS_KEY, old.status.value, -1)
        pipe.hincrby(COUNTS_KEY, new.status.value, 1)
        if old.status == JobStatus.queued:
            pipe.zrem(QUEUE_KEY, new.id)
        if old.status == JobStatus.running:
            pipe.srem(RUNNING_KEY, new.id)
        if new.status == JobStatus.queued:
            pipe.zadd(QUEUE_KEY, {new.id: _score(new)})
        if new.status == JobStatus.running:
            pipe.sadd(RUNNING_KEY, new.id)
        if new.status in ACTIVE:
            pipe.sadd(owner_active_key(new.owner), new.id)
        else:
            pipe.srem(owner_active_key(new.owner), new.id)

    @staticmethod
    def _record_duration(pipe: Any, seconds: float) -> None:
        for bound in DURATION_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(DURATIONS_KEY, f"le:{bound:g}", 1)
        pipe.hincrby(DURATIONS_KEY, "count", 1)
        pipe.hincrbyfloat(DURATIONS_KEY, "sum", seconds)

    def duration_histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative ``[(le, count), ..., ("+Inf", count)]`` and the sum of finished jobs' run times."""
        raw = self.redis.hgetall(DURATIONS_KEY)
        buckets = [(f"{b:g}", int(raw.get(f"le:{b:g}", 0))) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", int(raw.get("count", 0))))
        return buckets, float(raw.get("sum", 0.0))

    @staticmethod
    def _state_data(rec: JobRecord) -> dict[str, Any]:
        return {
            "status": rec.status.value,
            "stage": rec.stage,
            "attempt": rec.attempt,
            "step": rec.step,
            "total": rec.total_steps,
            "progress": rec.progress,
            "resumed_from_step": rec.resumed_from_step,
            "error": rec.error.model_dump() if rec.error else None,
        }

    # ---- cancel --------------------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Ask for a cancel; returns the record after it (``None``: no such job).

        A queued job is canceled at once (it will never run); a running job gets
        ``cancel_requested=True`` and its worker stops within a few seconds. A job that had already
        finished is returned unchanged (``cancel_requested`` stays ``False`` unless it was canceled).
        """

        def change(rec: JobRecord) -> dict[str, Any] | None:
            if rec.status == JobStatus.queued:
                return {"status": JobStatus.canceled, "cancel_requested": True}
            if rec.status == JobStatus.running:
                return {"cancel_requested": True} if not rec.cancel_requested else None
            return None

        return self._apply(job_id, None, change) or self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return self.redis.hget(job_key(job_id), "cancel_requested") == "true"

    # ---- counts and indexes --------------------------------------------------------------------

    def active_count(self, owner: str) -> int:
        """Queued + running jobs of ``owner``."""
        return int(self.redis.scard(owner_active_key(owner)))

    def queue_position(self, job_id: str) -> int | None:
        """Jobs queued ahead of this one (0: next to run); ``None`` if it is not queued."""
        rank = self.redis.zrank(QUEUE_KEY, job_id)
        return None if rank is None else int(rank)

    def queue_length(self) -> int:
        return int(self.redis.zcard(QUEUE_KEY))

    def counts_by_status(self) -> dict[str, int]:
        raw = self.redis.hgetall(COUNTS_KEY)
        return {s.value: int(raw.get(s.value, 0)) for s in JobStatus}

    def running_ids(self) -> list[str]:
        return sorted(self.redis.smembers(RUNNING_KEY))

    # ---- worker leases -------------------------------------------------------------------------

    def acquire_lease(self, job_id: str, worker_id: str, ttl: float) -> bool:
        """Take the job's lease for ``ttl`` seconds; ``True`` if it was free (or already ours)."""
        ms = max(1, int(ttl * 1000))
        if self.redis.set(lease_key(job_id), worker_id, nx=True, px=ms):
            return True
        return bool(self._renew(keys=[lease_key(job_id)], args=[worker_id, ms]))

    def renew_lease(self, job_id: str, worker_id: str, ttl: float) -> bool:
        """Extend our lease; ``False`` if it expired or another worker holds it now."""
        return bool(self._renew(keys=[lease_key(job_id)], args=[worker_id, max(1, int(ttl * 1000))]))

    def release_lease(self, job_id: str, worker_id: str) -> bool:
        return bool(self._release(keys=[lease_key(job_id)], args=[worker_id]))

    def lease_alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(lease_key(job_id)))

    def lease_owner(self, job_id: str) -> str | None:
        return self.redis.get(lease_key(job_id))

    # ---- delete --------------------------------------------------------------------------------

    def delete(self, job_id: str) -> bool:
        """Remove a job's record, indexes, lease and events (not its stored files)."""
        rec = self.get(job_id)
        if rec is None:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(job_key(job_id), lease_key(job_id), events_key(job_id))
        pipe.zrem(owner_jobs_key(rec.owner), job_id)
        pipe.srem(owner_active_key(rec.owner), job_id)
        pipe.zrem(QUEUE_KEY, job_id)
        pipe.srem(RUNNING_KEY, job_id)
        pipe.hincrby(COUNTS_KEY, rec.status.value, -1)
        pipe.execute()
        return True
