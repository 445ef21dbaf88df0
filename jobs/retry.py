"""Retry policies for the stores workers depend on: ride out an outage of Redis or S3 for a while."""

from __future__ import annotations

from typing import Any

import redis.exceptions
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

log = structlog.get_logger(__name__)


def _s3_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or status in (408, 429)
    return isinstance(exc, BotoCoreError)  # connection refused, timeouts, ...


def _redis_transient(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


def _policy(name: str, transient: Any, seconds: float) -> Retrying:
    def before_sleep(state: Any) -> None:
        log.warning(f"{name}_retry", attempt=state.attempt_number, error=str(state.outcome.exception())[:200])

    return Retrying(
        retry=retry_if_exception(transient),
        stop=stop_after_delay(seconds),
        wait=wait_exponential_jitter(multiplier=0.5, max=10),
        before_sleep=before_sleep,
        reraise=True,
    )


def s3(seconds: float) -> Retrying:
    """botocore retries a few times itself; this rides out a longer S3 outage on top."""
    return _policy("s3", _s3_transient, seconds)


def redis_(seconds: float) -> Retrying:
    return _policy("redis", _redis_transient, seconds)


def redis_async(seconds: float) -> AsyncRetrying:
    """The same for asyncio code (a shared gate, a run's board), looking again sooner: a request
    waits on it."""
    return AsyncRetrying(
        retry=retry_if_exception(_redis_transient),
        stop=stop_after_delay(seconds),
        wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
        reraise=True,
    )
