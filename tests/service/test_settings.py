"""Settings: environment parsing and the time-limit invariants Celery needs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sjc_service.queue import TASK_NAME, make_celery
from sjc_service.settings import Settings


def test_env_parsing(monkeypatch):
    monkeypatch.setenv("SJC_MODEL_DIRS", "/a, /b")
    monkeypatch.setenv("SJC_API_KEYS", "alice:k1,bob:k2")
    monkeypatch.setenv("SJC_STORE", "s3")
    s = Settings()
    assert s.model_dirs == ["/a", "/b"] and s.store == "s3"
    assert s.api_key_pairs() == [("alice", "k1"), ("bob", "k2")]
    monkeypatch.setenv("SJC_MODEL_DIRS", '["/c"]')
    assert Settings().model_dirs == ["/c"]
    assert Settings(api_keys="nocolon").api_key_pairs.__self__  # built fine; parse fails on use
    with pytest.raises(ValueError):
        Settings(api_keys="nocolon").api_key_pairs()


def test_visibility_timeout_must_exceed_hard_limit():
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(hard_time_limit_s=3600, soft_time_limit_s=3000, visibility_timeout_s=3600)
    with pytest.raises(ValidationError, match="SOFT_TIME_LIMIT"):
        Settings(hard_time_limit_s=100, soft_time_limit_s=100, visibility_timeout_s=1000)


def test_celery_app_options():
    s = Settings(queue_name="gpu-x", hard_time_limit_s=50, soft_time_limit_s=40, visibility_timeout_s=60)
    app = make_celery(s)
    c = app.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost and c.worker_prefetch_multiplier == 1
    assert c.broker_transport_options["visibility_timeout"] == 60 > c.task_time_limit == 50 > c.task_soft_time_limit
    assert c.task_routes[TASK_NAME]["queue"] == "gpu-x"


def test_the_reaper_interval_must_be_below_the_lease_ttl():
    from sjc_service.settings import Settings

    with pytest.raises(ValueError, match="SJC_REAPER_INTERVAL_S"):
        Settings(lease_ttl_s=10, reaper_interval_s=10)
    assert Settings(lease_ttl_s=10, reaper_interval_s=5).reaper_interval_s == 5
