"""Worker leases: the id of the worker running a job, under a TTL the worker keeps renewing.

A running job without a live lease has lost its worker: the API shows it as ``requeueing`` and a
reaper puts it back in the queue (:mod:`worker.reaper`).
"""

from __future__ import annotations

import redis

from sjc_service.keyspace import lease_key

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


class Leases:
    """Take, renew and release job leases.

    Args:
        redis: a client created with ``decode_responses=True``.
    """

    def __init__(self, redis: redis.Redis) -> None:
        self.redis = redis
        self._renew = redis.register_script(_RENEW_LUA)
        self._release = redis.register_script(_RELEASE_LUA)

    def acquire(self, job_id: str, worker_id: str, ttl: float) -> bool:
        """Take the job's lease for ``ttl`` seconds; ``True`` if it was free (or already ours)."""
        ms = max(1, int(ttl * 1000))
        if self.redis.set(lease_key(job_id), worker_id, nx=True, px=ms):
            return True
        return bool(self._renew(keys=[lease_key(job_id)], args=[worker_id, ms]))

    def renew(self, job_id: str, worker_id: str, ttl: float) -> bool:
        """Extend our lease; ``False`` if it expired or another worker holds it now."""
        return bool(self._renew(keys=[lease_key(job_id)], args=[worker_id, max(1, int(ttl * 1000))]))

    def release(self, job_id: str, worker_id: str) -> bool:
        return bool(self._release(keys=[lease_key(job_id)], args=[worker_id]))

    def alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(lease_key(job_id)))

    def holder(self, job_id: str) -> str | None:
        return self.redis.get(lease_key(job_id))
