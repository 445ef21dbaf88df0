"""The RQ entry point that posts a job's end to its notify_url, signed (jobs.webhooks), with retries.

One RQ job per job and final state (jobs.runner.queue.notify). Its retries wait inside it, with
exponential backoff, for at most WEBHOOK_RETRY_SECONDS from the first attempt: RQ's own delayed
retries need its scheduler running in some worker, and a lost scheduler lock stalls them for minutes,
while a sleep in the job cannot be missed. The cost: a receiver that keeps failing holds one worker
for that long.

An attempt is retried after a connection error, a timeout, a 5xx, 408 or 429; any other status ends
the delivery: 2xx delivered, a 3xx (redirects are not followed: the target was never checked), 4xx
refused. Each attempt is recorded on the job and as a `webhook` event (jobs.store.webhooks), so that a
delivery preempted by a stopping worker resumes on another one with its count and its time window.
"""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from jobs import __version__, retry
from jobs.runner import PREEMPT_SIGNAL, queue
from jobs.settings import Settings, get_settings
from jobs.store import job as jobs_
from jobs.store import webhooks as records
from jobs.webhooks import Refused, headers, message_id, parse, resolve

log = structlog.get_logger(__name__)
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
RETRIED_STATUSES = frozenset({408, 429})
TLS_VERIFY: ssl.SSLContext | bool = True  # httpx's default: certifi's certificate authorities


class Preempted(Exception):
    """The worker is shutting down; the delivery goes back on the queue and resumes elsewhere."""


@dataclass(frozen=True)
class Outcome:
    status: int | None = None
    error: str | None = None
    delivered: bool = False
    retry: bool = False


def event_body(job: jobs_.Job, stop_reason: str | None) -> bytes:
    """The event: Standard Webhooks' suggested envelope (type, timestamp, data), with its id."""
    state = job.state
    finished = datetime.fromtimestamp(job.finished_at or job.created_at, UTC)
    payload = {
        "id": message_id(job.id, state),
        "type": f"job.{state}",
        "timestamp": finished.isoformat().replace("+00:00", "Z"),
        "data": {
            "job_id": job.id,
            "state": state,
            "instructions_kept": job.progress.get("instructions_kept", 0),
            "instances_kept": job.progress.get("instances_kept", 0),
            "stop_reason": stop_reason,
            "error": job.error,
            # relative to the service's URL, which only the caller knows for sure (behind a proxy)
            "dataset_url": f"/v1/jobs/{job.id}/dataset" if job.dataset else None,
        },
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def attempt(url: str, settings: Settings, signed: dict[str, str], body: bytes) -> Outcome:
    """One POST to the address the host resolved to and passed the checks, never resolved again."""
    try:
        parts = parse(url, settings.webhook_allowed_hosts)  # the allowlist may have changed since submit
    except Refused as e:
        return Outcome(error=f"refused: {e}")
    try:
        address = resolve(parts, settings.webhook_allowed_hosts)
    except Refused as e:
        return Outcome(error=f"refused: {e}")
    except OSError as e:  # the name does not resolve (now): like a connection error
        return Outcome(error=f"cannot resolve {parts.hostname}: {e}", retry=True)
    host = f"[{address}]" if address.version == 6 else str(address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pinned = parts._replace(netloc=f"{host}:{port}").geturl()
    request_headers = {
        **signed,
        "Host": parts.netloc,
        "Content-Type": "application/json",
        "User-Agent": f"selfinstruct-service/{__version__}",
    }
    # https: the certificate is checked against the URL's host name (SNI), not the address
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    try:
        # no proxy from the environment (it would resolve the name again), no redirects
        with (
            httpx.Client(
                timeout=settings.webhook_timeout_seconds, trust_env=False, verify=TLS_VERIFY
            ) as client,
            client.stream(
                "POST", pinned, content=body, headers=request_headers, extensions=extensions
            ) as response,
        ):
            status = response.status_code
    except httpx.TimeoutException:
        return Outcome(error=f"no answer within {settings.webhook_timeout_seconds:g} s", retry=True)
    except httpx.HTTPError as e:
        return Outcome(error=f"{type(e).__name__}: {str(e)[:200]}", retry=True)
    if 200 <= status < 300:
        return Outcome(status=status, delivered=True)
    if 300 <= status < 400:
        return Outcome(status=status, error="a redirect; redirects are not followed")
    return Outcome(status=status, retry=status >= 500 or status in RETRIED_STATUSES)


def deliver(job_id: str, state: str) -> None:
    """Post the job's `state` event until it is delivered, refused, or WEBHOOK_RETRY_SECONDS have passed
    since the first attempt."""
    settings = get_settings()
    r = queue.connect(settings)
    redis_retry = retry.redis_(settings.redis_retry_seconds)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=job_id, webhook=f"job.{state}")
    job = redis_retry(jobs_.get, r, job_id)
    current = redis_retry(records.delivery, r, job_id, state)
    if job is None or job.state != state or not job.notify_url or current is None or current.final:
        return  # deleted, or delivered (or given up) before a retry of this RQ job
    stop_reason = redis_retry(jobs_.spending, r, job_id)[1]
    body = event_body(job, stop_reason)
    msg_id = message_id(job_id, state)
    preempted = threading.Event()
    # jobs.runner.worker forwards SIGTERM to the work horse as this signal
    signal.signal(PREEMPT_SIGNAL, lambda signum, frame: preempted.set())
    deadline = (current.first_attempt_at or time.time()) + settings.webhook_retry_seconds
    while True:
        signing = redis_retry(records.signing_secrets, r, job.team)
        now = time.time()
        if signing:
            outcome = attempt(job.notify_url, settings, headers(signing, msg_id, int(now), body), body)
        else:
            outcome = Outcome(error="the team has no webhook secret (POST /v1/webhook-secret)")
        count = current.attempts + 1
        wait = min(FIRST_BACKOFF_SECONDS * 2 ** (count - 1), MAX_BACKOFF_SECONDS, deadline - time.time())
        final = outcome.delivered or not outcome.retry or wait <= 0
        current = replace(
            current,
            attempts=count,
            status=outcome.status,
            error=outcome.error,
            delivered=outcome.delivered,
            final=final,
            first_attempt_at=current.first_attempt_at or now,
            last_attempt_at=now,
        )
        fields: dict[str, Any] = {"attempt": count, "status": outcome.status, "error": outcome.error}
        log.info("webhook_attempt", delivered=outcome.delivered, final=final, **fields)
        if not redis_retry(
            records.attempted, r, job_id, current, settings.max_job_events, None if final else round(wait, 3)
        ):
            log.info("webhook_job_deleted")
            return
        if final:
            return
        if preempted.wait(wait):
            raise Preempted("the worker is shutting down; the delivery resumes on another one")
