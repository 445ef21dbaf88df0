"""Redis connections from REDIS_URL, one way for every process: a plain `redis://` (or `rediss://`) URL, or
Redis Sentinel:

    redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db][?sentinel_password=...]

A Sentinel connection asks the sentinels for the service's master and asks again after a failover, so a
worker that loses the master mid-job rides it out with its Redis retries (REDIS_RETRY_SECONDS) and goes on
on the new one. `rediss+sentinel://` talks TLS to the master.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis import Redis

SCHEMES = ("redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True)
class SentinelURL:
    sentinels: list[tuple[str, int]]
    service: str
    db: int
    password: str | None
    sentinel_password: str | None
    tls: bool


def sentinel(url: str) -> SentinelURL | None:
    """A Sentinel URL's parts; None for a plain Redis URL. Raises ValueError for a malformed one."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        return None
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"a sentinel is host:port, not {host!r}")
        sentinels.append((name, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a Sentinel URL names its service, and optionally a db: /service_name[/db]")
    query = parse_qs(parts.query)
    return SentinelURL(
        sentinels,
        path[0],
        int(path[1]) if len(path) == 2 else 0,
        unquote(parts.password) if parts.password else None,
        query["sentinel_password"][0] if "sentinel_password" in query else None,
        parts.scheme.startswith("rediss"),
    )


def _sentinel_options(s: SentinelURL, options: dict[str, Any]) -> dict[str, Any]:
    """The sentinels get the caller's timeouts too: an unreachable one must not hang a request."""
    timeouts = {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
    return {"password": s.sentinel_password, **timeouts}


def _master_options(s: SentinelURL, options: dict[str, Any]) -> dict[str, Any]:
    return {"db": s.db, "password": s.password, "ssl": s.tls, **options}


def connect(url: str, **options: Any) -> Redis:
    """A client for REDIS_URL (`options`: redis-py's, such as socket_timeout)."""
    s = sentinel(url)
    if s is None:
        return Redis.from_url(url, **options)
    watchers = redis.sentinel.Sentinel(s.sentinels, sentinel_kwargs=_sentinel_options(s, options))
    return watchers.master_for(s.service, **_master_options(s, options))


def connect_async(url: str, **options: Any) -> redis.asyncio.Redis:
    """The same, for asyncio code."""
    s = sentinel(url)
    if s is None:
        return redis.asyncio.Redis.from_url(url, **options)
    watchers = redis.asyncio.sentinel.Sentinel(s.sentinels, sentinel_kwargs=_sentinel_options(s, options))
    return watchers.master_for(s.service, **_master_options(s, options))


def now(r: Redis) -> float:
    """Redis's clock, which every machine's workers share (theirs may be skewed)."""
    seconds, micros = r.time()
    return seconds + micros / 1e6
