"""The service's settings, read once from ``SJC_*`` environment variables (shared by api/ and worker/).

Every process of the service (API, Celery worker, tests' subprocesses) builds the same
:class:`Settings` from its environment, so a broker option or a bucket name is written in one place.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sjc_engine.run_spec import RunLimits


class Settings(BaseSettings):
    """Service settings; each field ``foo`` is read from the environment variable ``SJC_FOO``.

    Args:
        redis_url: Redis for the Celery broker, job records, progress streams and API keys.
        store: ``"local"`` (a folder, links signed by the API) or ``"s3"`` (any S3-compatible server).
        local_store_dir: folder of the local store.
        s3_endpoint_url: S3 endpoint the service talks to (``None``: AWS); e.g. MinIO or moto's server.
        s3_public_url: endpoint put in presigned URLs handed to clients (``None``: ``s3_endpoint_url``).
        s3_bucket, s3_region: bucket of the artifacts and its region.
        s3_access_key_id, s3_secret_access_key: credentials (``None``: boto3's usual lookup).
        s3_retry_mode, s3_max_attempts: botocore's retries of each S3 call ("standard": exponential backoff
            with jitter on throttling, 5xx and connection errors; "adaptive": plus client-side rate limiting).
        public_base_url: base URL of the API as clients see it (for local-store links).
        signing_secret: HMAC secret of local-store links.
        url_expiry_s: lifetime of artifact links in seconds.
        api_keys: ``"owner:key,owner2:key2"`` keys added at start-up (stored hashed).
        max_active_jobs_per_key: queued + running jobs an owner may have at once (429 beyond).
        max_steps: largest ``steps`` a job may ask for.
        max_prompt_chars: longest prompt accepted.
        model_dirs: folders holding model folders (JSON list or comma-separated in the environment).
        default_model: model of a job that names none.
        queue_name: the Celery queue the GPU workers consume.
        max_attempts: attempts (first run + resumes after crashes) before a job fails "too_many_attempts".
        soft_time_limit_s, hard_time_limit_s: Celery's per-task time limits (soft below hard).
        visibility_timeout_s: Redis transport's redelivery timeout; must exceed the hard limit,
            or a job longer than it is delivered twice.
        checkpoint_every: steps between uploads of a job's resumable state.
        lease_ttl_s: a running job's lease lifetime; a job whose lease expired is re-enqueued.
        reaper_interval_s: seconds between the worker's scans for jobs with an expired lease; also how
            often a worker's parent renews the leases of its busy children (must be below ``lease_ttl_s``).
        progress_interval_s: least seconds between two progress events of a job.
        cancel_poll_s: seconds between two reads of a job's cancel flag by its worker.
        worker_device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        worker_half: fp16 denoiser on CUDA.
        work_dir: scratch folder of the worker (one sub-folder per job, removed afterwards).
        events_maxlen: most events kept per job stream (approximate trimming).
        idempotency_ttl_s: how long an ``Idempotency-Key`` is remembered.
        sse_heartbeat_s: seconds between heartbeat comments on an idle event stream.
        webhook_queue: Celery queue of webhook deliveries (never the GPU queue).
        webhook_allow_private_targets: accept webhook URLs on private, loopback and link-local addresses.
        webhook_backoff_s, webhook_max_backoff_s: delay before a delivery's first retry (doubling at each
            retry) and the longest delay between two attempts.
        webhook_max_attempts: attempts of one delivery, the first included.
        webhook_timeout_s: seconds a webhook receiver has to answer.
        webhook_watch_interval_s: seconds between two scans of job events for webhooks to send.
        retention_days: finished jobs (record and files) are deleted this long after they finished (0: kept).
        sweep_interval_s: seconds between two sweeps for expired and deleted jobs.
        rate_limit_per_min: requests per minute per API key (token bucket; 0: no limit).
        rate_limit_burst: requests a key may make at once (the bucket's size).
    """

    model_config = SettingsConfigDict(env_prefix="SJC_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    store: Literal["local", "s3"] = "local"
    local_store_dir: str = ".sjc/store"
    s3_endpoint_url: str | None = None
    s3_public_url: str | None = None
    s3_bucket: str = "sjc-artifacts"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_retry_mode: Literal["standard", "adaptive"] = "standard"
    s3_max_attempts: int = Field(6, ge=1, le=20)
    public_base_url: str = "http://127.0.0.1:8000"
    signing_secret: SecretStr = SecretStr("dev-only-signing-secret-change-me")
    url_expiry_s: int = Field(3600, ge=1, le=7 * 24 * 3600)
    api_keys: str = ""
    max_active_jobs_per_key: int = Field(4, ge=1)
    max_steps: int = Field(20_000, ge=1)
    max_prompt_chars: int = Field(300, ge=1)
    model_dirs: Annotated[list[str], NoDecode] = []
    default_model: str = "embedded"
    queue_name: str = "gpu"
    max_attempts: int = Field(3, ge=1)
    soft_time_limit_s: int = Field(3300, ge=1)
    hard_time_limit_s: int = Field(3600, ge=1)
    visibility_timeout_s: int = Field(7200, ge=1)
    checkpoint_every: int = Field(200, ge=0)
    lease_ttl_s: float = Field(30.0, gt=0)
    reaper_interval_s: float = Field(15.0, gt=0)
    progress_interval_s: float = Field(0.5, ge=0)
    cancel_poll_s: float = Field(1.0, gt=0)
    worker_device: Literal["auto", "cpu", "cuda"] = "auto"
    worker_half: bool = True
    work_dir: str = ".sjc/work"
    events_maxlen: int = Field(2000, ge=10)
    idempotency_ttl_s: int = Field(24 * 3600, ge=1)
    sse_heartbeat_s: float = Field(15.0, gt=0)
    webhook_queue: str = "webhooks"
    webhook_allow_private_targets: bool = False
    webhook_backoff_s: float = Field(30.0, gt=0)
    webhook_max_backoff_s: float = Field(1200.0, gt=0)
    webhook_max_attempts: int = Field(10, ge=1, le=50)
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_watch_interval_s: float = Field(1.0, gt=0)
    retention_days: float = Field(7.0, ge=0)
    sweep_interval_s: float = Field(300.0, gt=0)
    rate_limit_per_min: float = Field(120.0, ge=0)
    rate_limit_burst: int = Field(30, ge=1)

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [p.strip() for p in text.split(",") if p.strip()]
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> "Settings":
        if self.reaper_interval_s >= self.lease_ttl_s:
            raise ValueError(
                f"SJC_REAPER_INTERVAL_S ({self.reaper_interval_s}) must be below SJC_LEASE_TTL_S ({self.lease_ttl_s}): "
                "a worker's parent renews its busy children's leases at that interval"
            )
        if self.soft_time_limit_s >= self.hard_time_limit_s:
            raise ValueError(
                f"SJC_SOFT_TIME_LIMIT_S ({self.soft_time_limit_s}) must be below "
                f"SJC_HARD_TIME_LIMIT_S ({self.hard_time_limit_s})"
            )
        if self.visibility_timeout_s <= self.hard_time_limit_s:
            raise ValueError(
                f"SJC_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed SJC_HARD_TIME_LIMIT_S "
                f"({self.hard_time_limit_s}), or Redis redelivers jobs that are still running (celery issue 3430)"
            )
        return self

    def run_limits(self) -> RunLimits:
        """What a job's run spec may ask for here: models by name only, steps and prompt capped."""
        return RunLimits(model_dirs=tuple(self.model_dirs), default_model=self.default_model, allow_paths=False,
                         max_steps=self.max_steps, max_prompt_chars=self.max_prompt_chars)

    def api_key_pairs(self) -> list[tuple[str, str]]:
        """``api_keys`` parsed into ``(owner, key)`` pairs; raises on a malformed entry."""
        pairs: list[tuple[str, str]] = []
        for item in self.api_keys.split(","):
            item = item.strip()
            if not item:
                continue
            owner, sep, key = item.partition(":")
            if not sep or not owner.strip() or not key.strip():
                raise ValueError("SJC_API_KEYS must look like 'owner:key,owner2:key2'")
            pairs.append((owner.strip(), key.strip()))
        return pairs


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once from the environment (``get_settings.cache_clear()`` in tests)."""
    return Settings()
