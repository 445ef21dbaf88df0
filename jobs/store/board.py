"""A run's board in Redis: its spread requests and their answers (jobs.method.transport.spread).

- todo (list): request keys no sender holds, in the order asked; first (list): those that go before
  them, in the order they came (a follow-up, a request whose lease ran out); requests (hash): key ->
  request;
- leased (sorted set): keys a sender holds, by the time its lease runs out;
- answers (hash): key -> answer, until the run reads it; done (list): a signal that one came;
- posted (set): keys the run wants, so a request is posted once and an answer nobody wants is dropped;
- closed (string): the run is done with the board (a helper that starts late leaves at once);
- helpers (sorted set): the helpers queued or running, by when they count no more (jobs.runner.helpers).

Times are Redis's own (TIME), so workers on machines with skewed clocks agree. Every key expires a day
after its last write: a run that never comes back leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio
import redis.exceptions

from jobs import retry
from jobs.store import keyspace

TTL = 24 * 3600
PARTS = keyspace.BOARD_PARTS[:8]  # the helpers' set is jobs.runner.helpers'

_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
_EXPIRE = "for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ARGV[#ARGV]) end\n"

# KEYS: todo, requests, leased, answers, done, posted, closed, first (in every script). ARGV: ..., ttl.
_POST = (
    """
redis.call('DEL', KEYS[7])
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return 0 end
if redis.call('SADD', KEYS[6], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('RPUSH', ARGV[3] == '1' and KEYS[8] or KEYS[1], ARGV[1])
"""
    + _EXPIRE
    + "return 1"
)

# a request a sender has, or has answered, stays: its answer waits for a run that asks again
_WITHDRAW = """
local untaken = redis.call('LREM', KEYS[1], 0, ARGV[1]) + redis.call('LREM', KEYS[8], 0, ARGV[1])
if untaken == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
return 1
"""

_TAKE = (
    _NOW
    + """
while true do
  local key = redis.call('LPOP', KEYS[8]) or redis.call('LPOP', KEYS[1])
  if not key then return nil end
  local request = redis.call('HGET', KEYS[2], key)
  if request then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), key)
    redis.call('EXPIRE', KEYS[3], ARGV[2])
    return {key, request}
  end
end
"""
)

_RENEW = (
    _NOW
    + """
for i = 2, #ARGV - 1 do redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
return 0
"""
)

_ANSWER = (
    """
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[5], '1')
"""
    + _EXPIRE
    + "return 1"
)

_READ = """
local out = {}
for i = 1, #ARGV - 1 do
  local answer = redis.call('HGET', KEYS[4], ARGV[i])
  if answer then
    redis.call('HDEL', KEYS[4], ARGV[i])
    redis.call('SREM', KEYS[6], ARGV[i])
    table.insert(out, ARGV[i])
    table.insert(out, answer)
  end
end
return out
"""

# ARGV: key, request, key, request, ..., ttl: requests the run waits for that are nowhere on the board
# (not waiting, out or answered) are posted again; returns how many.
_RECOVER = (
    """
local n = 0
for i = 1, #ARGV - 1, 2 do
  local key = ARGV[i]
  if redis.call('HEXISTS', KEYS[4], key) == 0 and not redis.call('ZSCORE', KEYS[3], key)
     and not redis.call('LPOS', KEYS[1], key) and not redis.call('LPOS', KEYS[8], key) then
    redis.call('SADD', KEYS[6], key)
    redis.call('HSET', KEYS[2], key, ARGV[i + 1])
    redis.call('RPUSH', KEYS[1], key)
    n = n + 1
  end
end
"""
    + _EXPIRE
    + "return n"
)

_MAINTAIN = (
    _NOW
    + """
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[3], key)
  if redis.call('HEXISTS', KEYS[2], key) == 1 then redis.call('RPUSH', KEYS[8], key) end
end
return redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[8]) + redis.call('ZCARD', KEYS[3])
"""
)


class RedisBoard:
    """One run's board (see the module's docstring); `workers`: how many workers' senders the run
    may keep busy, its own included."""

    def __init__(self, client: redis.asyncio.Redis, run_id: str, workers: int, retry_seconds: float = 60.0):
        self.client = client
        self.workers = workers
        self.retry_seconds = retry_seconds
        self.keys = [keyspace.board(run_id, part) for part in PARTS]
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("post", _POST),
                ("withdraw", _WITHDRAW),
                ("take", _TAKE),
                ("renew", _RENEW),
                ("answer", _ANSWER),
                ("read", _READ),
                ("maintain", _MAINTAIN),
                ("recover", _RECOVER),
            )
        }

    async def _retried(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Ride out a Redis outage (a failover, say) for `retry_seconds`."""
        async for attempt in retry.redis_async(self.retry_seconds):
            with attempt:
                return await call()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._retried(lambda: self._scripts[name](keys=self.keys, args=[*args, TTL]))

    async def post(self, key: str, request: bytes, front: bool = False) -> bool:
        return bool(await self._run("post", key, request, int(front)))

    async def withdraw(self, key: str) -> None:
        await self._run("withdraw", key)

    async def take(self, lease: float) -> tuple[str, bytes] | None:
        got = await self._run("take", lease)
        return (got[0].decode(), got[1]) if got else None

    async def renew(self, keys: list[str], lease: float) -> None:
        await self._run("renew", lease, *keys)

    async def answer(self, key: str, answer: bytes) -> None:
        await self._run("answer", key, answer)

    async def answered(self, keys: list[str], wait: float) -> dict[str, bytes]:
        got = await self._run("read", *keys) if keys else []
        if not got and wait > 0:
            # an answer pushes to `done` after it is in the hash: the next read finds it
            await self._retried(lambda: self.client.blpop([self.keys[4]], timeout=wait))
            await self._retried(lambda: self.client.delete(self.keys[4]))
        return {got[i].decode(): got[i + 1] for i in range(0, len(got), 2)}

    async def maintain(self) -> int:
        return int(await self._run("maintain"))

    async def recover(self, requests: dict[str, bytes]) -> int:
        if not requests:
            return 0
        return int(await self._run("recover", *(x for pair in requests.items() for x in pair)))

    async def recruit(self, pending: int) -> int:
        return 0  # no helpers: the run's own senders answer everything

    async def is_closed(self) -> bool:
        return bool(await self.client.exists(self.keys[6]))

    async def close(self) -> None:
        """Drop the board's requests and answers and mark it closed (helpers leave)."""

        async def drop() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(*self.keys)
                pipe.set(self.keys[6], 1, ex=TTL)
                await pipe.execute()

        try:
            await self._retried(drop)
        finally:
            await self.client.aclose()

    async def release(self) -> None:
        await self.client.aclose()
