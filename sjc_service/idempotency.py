"""``Idempotency-Key``: the first request with a key claims it for its job; a repeat gets that job back.

A claim is ``{"job_id", "request_hash"}`` under ``sjc:idem:{owner}:{key}`` with a TTL; a repeat whose
body hashed differently is an :class:`IdempotencyConflict`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from sjc_service.keyspace import idem_key


class IdempotencyConflict(ValueError):
    """The ``Idempotency-Key`` was used before with a different request body (HTTP 422)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Idempotency-Key already used for job {job_id} with a different request")
        self.job_id = job_id


def claim(client: redis.Redis, owner: str, key: str, job_id: str, request_hash: str | None, ttl_s: int) -> bool:
    """Claim ``key`` for ``job_id``; ``False`` when an earlier request holds it."""
    value = json.dumps({"job_id": job_id, "request_hash": request_hash})
    return bool(client.set(idem_key(owner, key), value, nx=True, ex=ttl_s))


def release(client: redis.Redis, owner: str, key: str) -> None:
    """Forget a claim whose job was never made (refused or not enqueued), so a retry starts clean."""
    client.delete(idem_key(owner, key))


def claimed_job(client: redis.Redis, owner: str, key: str, request_hash: str | None,
                get: Callable[[str], Any], wait_s: float = 2.0) -> Any:
    """The job an earlier request with ``key`` made (waiting up to ``wait_s`` for it to be written).

    Raises :class:`IdempotencyConflict` when that request's body differed.
    """
    deadline = time.monotonic() + wait_s
    while True:
        raw = client.get(idem_key(owner, key))
        if raw is not None:
            found = json.loads(raw)
            if found.get("request_hash") != request_hash:
                raise IdempotencyConflict(found["job_id"])
            rec = get(found["job_id"])
            if rec is not None:
                return rec
        if time.monotonic() > deadline:  # the first request claimed the key but never wrote its job
            raise RuntimeError(f"idempotency key {key!r} of {owner!r} points to a job that does not exist")
        time.sleep(0.02)
