"""An endpoint's limits, held in Redis for the whole cluster: every worker and every job that sends to
the same model at the same server waits its turn at one gate (jobs.method.transport.Gate).

- In flight: each attempt holds a lease (a sorted set of tickets by expiry) while it is out. A lease
  expires by itself after the endpoint's timeout and a margin, so a worker killed mid-request cannot
  leak it. An attempt abandoned while out (its run stopped or gave way) keeps its lease as long as the
  provider may still be answering it (Outcome.hold).
- Requests and tokens a minute: one GCRA cell each (a theoretical arrival time; a minute's allowance
  may go at once). An attempt is charged its estimated tokens when it enters, corrected to what it spent
  when it leaves.
- Slowing down together: the number of leases allowed (`cap`) starts at the endpoint's max_in_flight,
  halves on a 429 (once per congestion event: the 429s of one burst, seen by many workers, halve it
  once) and grows back by one per `cap` answers (additive increase, multiplicative decrease); a 429's
  Retry-After, or a spent x-ratelimit-remaining-* until its reset, pauses every worker. A throttled
  attempt gets its tokens back: the provider did not count it.

Times are Redis's own (TIME), so workers on machines with skewed clocks agree.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import redis.asyncio
import redis.exceptions
import structlog

from jobs import retry
from jobs.method.endpoint import Endpoint
from jobs.method.transport import Outcome, Passage, pause_after
from jobs.store import connection, keyspace

log = structlog.get_logger(__name__)
LEASE_MARGIN = 30.0  # seconds a lease outlives its request's timeout and longest wait
IDLE_SECONDS = 24 * 3600  # the state of a gate nobody used for this long goes
MAX_POLL = 0.25  # the longest a waiting attempt sleeps before it looks again

# KEYS: leases, state. ARGV: ticket, lease seconds, max in flight, requests a minute, tokens a minute
# (0: none), the attempt's tokens. Returns "0" (let through) or the seconds to wait ("-1": a lease may
# free any moment).
_ENTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local paused = tonumber(redis.call('HGET', KEYS[2], 'paused_until') or '0')
if paused > now then return tostring(paused - now) end
local most = tonumber(ARGV[3])
if most > 0 then
  local cap = tonumber(redis.call('HGET', KEYS[2], 'cap') or ARGV[3])
  if redis.call('ZCARD', KEYS[1]) >= math.max(1, math.floor(cap)) then return '-1' end
end
local function cell(field, per_minute, cost)
  if per_minute <= 0 then return 0, nil end
  local interval = 60 / per_minute
  local tat = math.max(tonumber(redis.call('HGET', KEYS[2], field) or '0'), now)
  local after = tat + math.min(cost, per_minute) * interval
  if after - now > 60 then return after - now - 60, nil end
  return 0, after
end
local wait_r, requests = cell('requests_tat', tonumber(ARGV[4]), 1)
local wait_t, tokens = cell('tokens_tat', tonumber(ARGV[5]), tonumber(ARGV[6]))
if wait_r > 0 or wait_t > 0 then return tostring(math.max(wait_r, wait_t)) end
if requests then redis.call('HSET', KEYS[2], 'requests_tat', requests) end
if tokens then redis.call('HSET', KEYS[2], 'tokens_tat', tokens) end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return '0'
"""

# KEYS: leases, state. ARGV: ticket, answered (1/0), throttled (1/0), pause seconds (0: none), max in
# flight (0: none), tokens a minute (0: none), tokens spent minus tokens charged, seconds the lease
# is kept (0: given back now).
_LEAVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
if tonumber(ARGV[8]) > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[8]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local most = tonumber(ARGV[5])
if most > 0 then
  local cap = tonumber(redis.call('HGET', KEYS[2], 'cap') or ARGV[5])
  if ARGV[3] == '1' then
    if now >= tonumber(redis.call('HGET', KEYS[2], 'calm_after') or '0') then
      cap = math.max(1, cap / 2)
      redis.call('HSET', KEYS[2], 'calm_after', tostring(now + math.max(tonumber(ARGV[4]), 1)))
    end
  elseif ARGV[2] == '1' then
    cap = math.min(most, cap + 1 / cap)
  end
  redis.call('HSET', KEYS[2], 'cap', tostring(cap))
end
local pause = tonumber(ARGV[4])
if pause > 0 then
  local paused = tonumber(redis.call('HGET', KEYS[2], 'paused_until') or '0')
  redis.call('HSET', KEYS[2], 'paused_until', tostring(math.max(paused, now + pause)))
end
local per_minute = tonumber(ARGV[6])
local more = tonumber(ARGV[7])
if per_minute > 0 and more ~= 0 then
  local tat = tonumber(redis.call('HGET', KEYS[2], 'tokens_tat') or '0')
  redis.call('HSET', KEYS[2], 'tokens_tat', tostring(math.max(tat + more * 60 / per_minute, now)))
end
return 0
"""


class SharedGate:
    """The gate of one endpoint's limits in Redis (see the module's docstring)."""

    def __init__(self, client: redis.asyncio.Redis, endpoint: Endpoint, retry_seconds: float = 60.0):
        """`retry_seconds`: how long an attempt waits out a Redis outage (a failover, say) at the gate
        before its run fails, as the run's commits do (REDIS_RETRY_SECONDS)."""
        self.client = client
        self.endpoint = endpoint
        self.retry_seconds = retry_seconds
        key = endpoint.limit_key
        self.keys = [keyspace.endpoint_leases(key), keyspace.endpoint_limits(key)]
        self.lease = endpoint.timeout + endpoint.max_wait + LEASE_MARGIN
        self.charged: dict[str, int] = {}
        self._enter = client.register_script(_ENTER)
        self._leave = client.register_script(_LEAVE)

    @classmethod
    def connect(cls, redis_url: str, endpoint: Endpoint, retry_seconds: float = 60.0) -> SharedGate:
        return cls(connection.connect_async(redis_url), endpoint, retry_seconds)

    async def _script(self, script: Any, args: list[Any]) -> Any:
        """Run a gate script, riding out a Redis outage for `retry_seconds`."""
        async for attempt in retry.redis_async(self.retry_seconds):
            with attempt:
                return await script(keys=self.keys, args=args)
        raise AssertionError("unreachable")  # pragma: no cover

    async def enter(self, tokens: int) -> Passage:
        e, ticket, waited, poll = self.endpoint, uuid.uuid4().hex, 0.0, 0.01
        args = [ticket, self.lease, e.max_in_flight or 0, e.requests_per_minute or 0]
        args += [e.tokens_per_minute or 0, tokens, int(IDLE_SECONDS)]
        while True:
            wait = float(await self._script(self._enter, args))
            if wait == 0:
                self.charged[ticket] = tokens
                return Passage(ticket, waited)
            if wait < 0:  # the leases are all out: look again soon, a little later each time
                wait, poll = poll * random.uniform(0.5, 1.5), min(poll * 2, MAX_POLL)
            wait = min(wait, self.endpoint.max_wait)
            await asyncio.sleep(wait)
            waited += wait

    async def leave(self, passage: Passage, outcome: Outcome) -> None:
        endpoint = self.endpoint
        charged = self.charged.pop(passage.ticket, 0)
        # tokens spent beyond the charge; a throttled attempt spent none
        more = outcome.tokens - charged if outcome.ok else -charged if outcome.throttled else 0
        pause = pause_after(outcome, endpoint.max_wait)
        args = [passage.ticket, int(outcome.ok), int(outcome.throttled), pause, endpoint.max_in_flight or 0]
        args += [endpoint.tokens_per_minute or 0, more, outcome.hold]
        try:  # once: a lease not given back runs out by itself, and the request is done
            await self._leave(keys=self.keys, args=args)
        except redis.exceptions.RedisError as error:
            log.warning("limits_not_updated", error=str(error)[:200])

    async def close(self) -> None:
        await self.client.aclose()
