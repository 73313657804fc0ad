"""API keys: stored as SHA-256 hashes in Redis, never in clear.

A key is looked up by its hash (``HGET sjc:apikeys <sha256>``): the lookup's timing can only reveal
something about the hash, which an attacker cannot steer towards a real key without a preimage. The
stored hash is then compared with :func:`hmac.compare_digest` all the same, so no code path compares
secrets with ``==``. Bootstrap keys come from ``Settings.api_keys`` as ``"owner:key,owner2:key2"``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from redis import Redis

from sjc_service.keyspace import API_KEYS_HASH
from sjc_service.settings import Settings

KEYS_HASH = API_KEYS_HASH
"""Redis hash: sha256 hex digest of a key -> ``"<owner>|<sha256 hex>"`` (the digest again, for the compare)."""


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyStore:
    """Bearer API keys of the service, kept hashed in Redis.

    Args:
        redis: a ``redis.Redis`` client (``decode_responses`` either way).
        min_length: shortest key :meth:`add` accepts (default 8 characters).
    """

    def __init__(self, redis: Redis, *, min_length: int = 8) -> None:
        self.redis = redis
        self.min_length = min_length

    def add(self, owner: str, key: str) -> None:
        """Register ``key`` for ``owner`` (idempotent; re-adding a key moves it to the new owner)."""
        if not owner or "|" in owner:
            raise ValueError(f"invalid key owner {owner!r}")
        if len(key) < self.min_length:
            raise ValueError(f"API keys must be at least {self.min_length} characters long")
        digest = hash_key(key)
        self.redis.hset(KEYS_HASH, digest, f"{owner}|{digest}")

    def revoke(self, key: str) -> bool:
        """Forget ``key``; return whether it existed."""
        return bool(self.redis.hdel(KEYS_HASH, hash_key(key)))

    def verify(self, key: str) -> str | None:
        """The owner of ``key``, or ``None`` for an unknown key."""
        if not key:
            return None
        digest = hash_key(key)
        stored: Any = self.redis.hget(KEYS_HASH, digest)
        if stored is None:
            return None
        if isinstance(stored, bytes):
            stored = stored.decode("utf-8")
        owner, _, stored_digest = stored.rpartition("|")
        if not hmac.compare_digest(stored_digest.encode(), digest.encode()):
            return None
        return owner

    def bootstrap(self, settings: Settings) -> int:
        """Add every key of ``settings.api_keys`` (``"owner:key,owner2:key2"``); return how many."""
        pairs = settings.api_key_pairs()
        for owner, key in pairs:
            self.add(owner, key)
        return len(pairs)
