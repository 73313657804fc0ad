"""Per-key request rates: a token bucket in Redis, one Lua call per request.

A key's bucket holds at most ``burst`` tokens and refills at ``per_min`` tokens a minute; a request
takes one token or is refused with the seconds until the next token. The clock is Redis' own
(``TIME``), so every API process shares one bucket per key. Headers follow the IETF draft
"RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers):

- ``RateLimit-Policy: "default";q=<burst>;w=<seconds to refill an empty bucket>``
- ``RateLimit: "default";r=<tokens left>;t=<seconds until the bucket is full again>``
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

PREFIX = "sjc:ratelimit:"
POLICY_NAME = "default"

# KEYS[1] bucket; ARGV: rate (tokens/s), burst. Returns {allowed, tokens*1000, retry_after_ms, full_in_ms}.
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry_ms = math.ceil((1 - tokens) / rate * 1000)
end
local full_ms = math.ceil((burst - tokens) / rate * 1000)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], full_ms + 1000)
return {allowed, math.floor(tokens * 1000), retry_ms, full_ms}
"""


@dataclass(frozen=True)
class Decision:
    """What the bucket said about one request."""

    allowed: bool
    remaining: int
    retry_after_s: int
    full_in_s: int
    burst: int
    window_s: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` (plus ``Retry-After`` when refused)."""
        out = {
            "RateLimit-Policy": f'"{POLICY_NAME}";q={self.burst};w={self.window_s}',
            "RateLimit": f'"{POLICY_NAME}";r={self.remaining};t={self.full_in_s}',
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_s)
        return out


class RateLimiter:
    """Token buckets per owner.

    Args:
        client: Redis.
        per_min: tokens added per minute (0: no limit; :meth:`take` always allows).
        burst: the bucket's size: requests a key may make at once.
    """

    def __init__(self, client: redis.Redis, per_min: float, burst: int) -> None:
        self.client, self.per_min, self.burst = client, per_min, burst
        self._take = client.register_script(_TAKE_LUA)

    @property
    def enabled(self) -> bool:
        return self.per_min > 0

    @property
    def window_s(self) -> int:
        """Seconds an empty bucket takes to fill up."""
        return math.ceil(self.burst * 60 / self.per_min) if self.enabled else 0

    def take(self, owner: str) -> Decision:
        """Take one token from ``owner``'s bucket."""
        if not self.enabled:
            return Decision(True, self.burst, 0, 0, self.burst, 0)
        allowed, milli, retry_ms, full_ms = self._take(keys=[PREFIX + owner], args=[self.per_min / 60, self.burst])
        return Decision(bool(allowed), int(milli) // 1000, max(1, math.ceil(int(retry_ms) / 1000)),
                        math.ceil(int(full_ms) / 1000), self.burst, self.window_s)

    def peek(self, owner: str) -> int:
        """Tokens ``owner`` has now (without taking one)."""
        if not self.enabled:
            return self.burst
        raw = self.client.hget(PREFIX + owner, "tokens")
        if raw is None:
            return self.burst
        ts = float(self.client.hget(PREFIX + owner, "ts") or 0)
        now_s, now_us = self.client.time()
        refill = max(0.0, now_s + now_us / 1e6 - ts) * self.per_min / 60
        return int(min(self.burst, float(raw) + refill))
