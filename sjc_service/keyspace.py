"""Every name the service writes: Redis keys (all under ``sjc:``) and object keys (all under ``jobs/{id}/``).

Redis:

- ``sjc:job:{id}``: hash, one JSON-encoded value per :class:`~sjc_service.schemas.JobRecord` field.
- ``sjc:job:{id}:lease``: the id of the worker running the job, with a TTL it keeps renewing.
- ``sjc:job:{id}:events``: the job's event stream (:mod:`sjc_service.events`).
- ``sjc:owner:{owner}:jobs``: sorted set of the owner's job ids by creation time (newest-first pages).
- ``sjc:owner:{owner}:active``: set of the owner's queued and running jobs (concurrency caps).
- ``sjc:queue``: sorted set of queued job ids by enqueue order (``sjc:queue:seq``); a requeued job
  goes to the tail, as its new message does in the broker: queue positions are ranks here.
- ``sjc:running``: set of running job ids (the worker's reaper scans it).
- ``sjc:counts``: hash status -> number of jobs; ``sjc:durations``: run-time histogram (``/metrics``).
- ``sjc:idem:{owner}:{key}``: ``{"job_id", "request_hash"}`` of an ``Idempotency-Key``, with a TTL.
- ``sjc:apikeys``: hash sha256(key) -> ``"<owner>|<sha256>"`` (:mod:`sjc_service.keys`).
- ``sjc:job:{id}:outages``: how many times an object-store outage sent the job back (:mod:`worker.outage`).
- ``sjc:delete:pending``: jobs to delete once they stop; ``sjc:deleted:{owner}:{id}``: a short tombstone
  that makes a repeated ``DELETE`` succeed again (:mod:`sjc_service.retention`).
- Webhooks and rate limits keep their keys beside their code, under ``sjc:webhook:`` / ``sjc:job:{id}:webhook``
  (:mod:`sjc_service.webhooks`) and ``sjc:ratelimit:`` (:mod:`sjc_service.ratelimit`).

Object store: ``jobs/{id}/<name>`` for every file of a job; ``jobs/{id}/resume/`` is the worker's
resumable state (internal, never listed to clients); ``jobs/{id}/manifest.json`` is written last.
"""

from __future__ import annotations

PREFIX = "sjc:"
QUEUE_KEY = PREFIX + "queue"
QUEUE_SEQ_KEY = PREFIX + "queue:seq"
RUNNING_KEY = PREFIX + "running"
COUNTS_KEY = PREFIX + "counts"
DURATIONS_KEY = PREFIX + "durations"
API_KEYS_HASH = PREFIX + "apikeys"
DELETE_PENDING_KEY = PREFIX + "delete:pending"
OWNER_JOBS_PATTERN = PREFIX + "owner:*:jobs"

JOBS_ROOT = "jobs/"
MANIFEST = "manifest.json"
RESUME_DIR = "resume/"
RESUME_STATE = RESUME_DIR + "state.pt"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def lease_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:lease"


def events_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:events"


def outage_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:outages"


def tombstone_key(owner: str, job_id: str) -> str:
    return f"{PREFIX}deleted:{owner}:{job_id}"


def owner_jobs_key(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:jobs"


def owner_active_key(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:active"


def idem_key(owner: str, key: str) -> str:
    return f"{PREFIX}idem:{owner}:{key}"


def job_prefix(job_id: str) -> str:
    """The folder of a job's objects: ``jobs/{id}/``."""
    return f"{JOBS_ROOT}{job_id}/"


def object_key(job_id: str, name: str) -> str:
    """The key of the job's file ``name`` (``"mesh.glb"``, ``"previews/step_000100.png"``)."""
    return job_prefix(job_id) + name


def resume_key(job_id: str) -> str:
    """Where the worker keeps the job's resumable state."""
    return object_key(job_id, RESUME_STATE)
