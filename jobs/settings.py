"""Deployment settings, all from environment variables with documented defaults (docs/configuration.md).

One run's parameters (its recipe) are in jobs.method.recipe; this module is the environment the
service and workers run in: where Redis and S3 are, which LLM endpoints the operator offers,
and the limits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.webhooks import check_allowlist

if TYPE_CHECKING:  # the API process never talks to an endpoint: it must not load openai
    from jobs.method.llm import Endpoint


@dataclass(frozen=True)
class Profile:
    """An LLM endpoint the operator offers under a name. Callers pick a name, never a URL or key."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None  # the key is read from this variable, never stored in config
    concurrency: int = 2
    timeout: float = 120.0
    max_attempts: int = 6
    max_wait: float = 30.0
    supports_n: bool = False
    api: str = "completions"  # or "chat": /v1/chat/completions, for instruction-following models
    response_format: str | None = None  # chat only: "json_schema" (OpenAI, vLLM) or "json_object" (llama.cpp)
    # {"prompt": p, "completion": c}: what a million tokens cost, in `currency`; jobs then report cost
    price_per_million_tokens: dict[str, float] | None = None
    currency: str = "USD"
    # chat only: the token cap's name, "max_completion_tokens" (the default: OpenAI deprecated the other)
    # or "max_tokens" (llama.cpp's servers know only that one)
    max_tokens_param: str | None = None
    # send each request's seed; default: on completions, not on chat (OpenAI deprecated it there; vLLM
    # and llama.cpp honour it)
    send_seed: bool | None = None
    reasoning: bool = False  # chat only: a reasoning model (o-series, gpt-5): no sampling parameters
    # "batch": stages go through the provider's Batch API (POST /v1/files, /v1/batches), at
    # batch_price_per_million_tokens (default: price_per_million_tokens)
    mode: str = "online"
    batch_price_per_million_tokens: dict[str, float] | None = None

    def __post_init__(self) -> None:
        # refused when the settings load, not when a job first calls the endpoint
        if self.api not in ("completions", "chat"):
            raise ValueError(f"profile {self.name!r}: api must be completions or chat, not {self.api!r}")
        if self.response_format not in (None, "json_schema", "json_object") or (
            self.response_format and self.api != "chat"
        ):
            raise ValueError(
                f"profile {self.name!r}: response_format is json_schema or json_object, for chat profiles"
            )
        if self.max_tokens_param not in (None, "max_completion_tokens", "max_tokens") or (
            self.max_tokens_param == "max_completion_tokens" and self.api != "chat"
        ):
            raise ValueError(
                f"profile {self.name!r}: max_tokens_param is max_completion_tokens (chat only) or max_tokens"
            )
        if self.reasoning and self.api != "chat":
            raise ValueError(f"profile {self.name!r}: reasoning is for chat profiles")
        if not isinstance(self.send_seed, bool | None) or not isinstance(self.reasoning, bool):
            raise ValueError(f"profile {self.name!r}: send_seed and reasoning are true or false")
        if self.mode not in ("online", "batch"):
            raise ValueError(f"profile {self.name!r}: mode is online or batch, not {self.mode!r}")
        for name in ("price_per_million_tokens", "batch_price_per_million_tokens"):
            prices = getattr(self, name)
            if prices is not None and (
                set(prices) != {"prompt", "completion"}
                or not all(isinstance(v, int | float) and v >= 0 for v in prices.values())
            ):
                raise ValueError(
                    f"profile {self.name!r}: {name} is {{prompt, completion}}, non-negative numbers"
                )

    @property
    def prices(self) -> tuple[float, float] | None:
        """Per million prompt and completion tokens, in the profile's mode."""
        return self.mode_prices(self.mode)

    def mode_prices(self, mode: str) -> tuple[float, float] | None:
        online = self.price_per_million_tokens
        p = (self.batch_price_per_million_tokens or online) if mode == "batch" else online
        return None if p is None else (float(p["prompt"]), float(p["completion"]))

    def endpoint(self) -> Endpoint:
        from jobs.method.llm import Endpoint

        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return Endpoint(
            base_url=self.base_url,
            model=self.model,
            api_key=key or "sk-none",
            timeout=self.timeout,
            max_attempts=self.max_attempts,
            max_wait=self.max_wait,
            supports_n=self.supports_n,
            api=self.api,
            response_format=self.response_format,
            prices=self.prices,
            currency=self.currency,
            max_tokens_param=self.max_tokens_param,
            send_seed=self.send_seed,
            reasoning=self.reasoning,
            mode=self.mode,
        )


def _profiles(raw: str) -> dict[str, Profile]:
    if not raw.strip():
        return {}
    text = Path(raw).read_text() if not raw.lstrip().startswith("{") else raw
    data: dict[str, dict[str, Any]] = json.loads(text)
    return {name: Profile(name=name, **options) for name, options in data.items()}


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint_url: str | None = None  # None: AWS itself
    s3_public_endpoint_url: str | None = None  # what presigned URLs point at; default s3_endpoint_url
    s3_bucket: str = "selfinstruct"
    s3_region: str = "us-east-1"
    presign_ttl: int = 900
    profiles: dict[str, Profile] = field(default_factory=dict)
    default_profile: str | None = None
    queue: str = "generation"
    job_timeout: int = 24 * 3600
    instance_chunk_size: int = 50
    max_request_bytes: int = 8 * 1024 * 1024
    max_seed_tasks: int = 10_000
    max_instructions: int = 100_000
    log_level: str = "INFO"
    work_dir: str = "/tmp"
    s3_retry_seconds: float = 60.0
    redis_retry_seconds: float = 60.0
    job_retries: int = 10
    auth_disabled: bool = False
    rate_limit_per_minute: int = 600
    max_active_jobs: int = 5
    # how long a finished job (record, archived decisions, dataset) is kept after it finished
    job_retention_seconds: int = 30 * 24 * 3600
    # The API answers a longer URL (path and query) with a 414 problem; gunicorn's own limits sit above
    # it (its answers are outside the app: see service/gunicorn_conf.py).
    max_url_chars: int = 4096
    gunicorn_limit_request_line: int = 8190  # gunicorn's ceiling
    gunicorn_limit_request_fields: int = 100
    gunicorn_limit_request_field_size: int = 8190
    # previews: their own queue (a long job never blocks one), a cap on their size, how long the POST
    # waits for the result before answering 202, and how long a result is kept
    preview_queue: str = "preview"
    preview_max_instructions: int = 20
    preview_wait_seconds: float = 30.0
    preview_retention_seconds: int = 3600
    # a job's event stream keeps this many events (the oldest go first); progress events this often
    max_job_events: int = 10_000
    progress_event_seconds: float = 10.0
    # webhooks (jobs.webhooks): the hosts a job's notify_url may name (exact names or *.suffix patterns;
    # none: no webhooks), one attempt's timeout, and how long a delivery is retried in all
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_timeout_seconds: float = 10.0
    webhook_retry_seconds: float = 600.0
    # batch-mode profiles: how often a job waiting on the provider's batches looks at them again
    batch_poll_seconds: float = 60.0

    def __post_init__(self) -> None:
        check_allowlist(self.webhook_allowed_hosts)  # a bad entry stops the process at start

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        profiles = _profiles(e.get("LLM_PROFILES", ""))
        s3 = e.get("S3_ENDPOINT_URL") or None
        return cls(
            redis_url=e.get("REDIS_URL", cls.redis_url),
            s3_endpoint_url=s3,
            s3_public_endpoint_url=e.get("S3_PUBLIC_ENDPOINT_URL") or s3,
            s3_bucket=e.get("S3_BUCKET", cls.s3_bucket),
            s3_region=e.get("S3_REGION", cls.s3_region),
            presign_ttl=int(e.get("PRESIGN_TTL_SECONDS", cls.presign_ttl)),
            profiles=profiles,
            default_profile=e.get("DEFAULT_PROFILE") or next(iter(profiles), None),
            queue=e.get("RQ_QUEUE", cls.queue),
            job_timeout=int(e.get("JOB_TIMEOUT_SECONDS", cls.job_timeout)),
            instance_chunk_size=int(e.get("INSTANCE_CHUNK_SIZE", cls.instance_chunk_size)),
            max_request_bytes=int(e.get("MAX_REQUEST_BYTES", cls.max_request_bytes)),
            max_seed_tasks=int(e.get("MAX_SEED_TASKS", cls.max_seed_tasks)),
            max_instructions=int(e.get("MAX_INSTRUCTIONS", cls.max_instructions)),
            log_level=e.get("LOG_LEVEL", cls.log_level),
            work_dir=e.get("WORK_DIR", cls.work_dir),
            s3_retry_seconds=float(e.get("S3_RETRY_SECONDS", cls.s3_retry_seconds)),
            redis_retry_seconds=float(e.get("REDIS_RETRY_SECONDS", cls.redis_retry_seconds)),
            job_retries=int(e.get("JOB_RETRIES", cls.job_retries)),
            auth_disabled=e.get("AUTH_DISABLED", "").lower() in ("1", "true", "yes"),
            rate_limit_per_minute=int(e.get("RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_minute)),
            max_active_jobs=int(e.get("MAX_ACTIVE_JOBS_PER_TEAM", cls.max_active_jobs)),
            job_retention_seconds=int(e.get("JOB_RETENTION_SECONDS", cls.job_retention_seconds)),
            max_url_chars=int(e.get("MAX_URL_CHARS", cls.max_url_chars)),
            gunicorn_limit_request_line=int(
                e.get("GUNICORN_LIMIT_REQUEST_LINE", cls.gunicorn_limit_request_line)
            ),
            gunicorn_limit_request_fields=int(
                e.get("GUNICORN_LIMIT_REQUEST_FIELDS", cls.gunicorn_limit_request_fields)
            ),
            gunicorn_limit_request_field_size=int(
                e.get("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", cls.gunicorn_limit_request_field_size)
            ),
            batch_poll_seconds=float(e.get("BATCH_POLL_SECONDS", cls.batch_poll_seconds)),
            preview_queue=e.get("PREVIEW_QUEUE", cls.preview_queue),
            preview_max_instructions=int(e.get("PREVIEW_MAX_INSTRUCTIONS", cls.preview_max_instructions)),
            preview_wait_seconds=float(e.get("PREVIEW_WAIT_SECONDS", cls.preview_wait_seconds)),
            preview_retention_seconds=int(e.get("PREVIEW_RETENTION_SECONDS", cls.preview_retention_seconds)),
            max_job_events=int(e.get("MAX_JOB_EVENTS", cls.max_job_events)),
            progress_event_seconds=float(e.get("PROGRESS_EVENT_SECONDS", cls.progress_event_seconds)),
            webhook_allowed_hosts=tuple(
                h.strip().lower() for h in e.get("WEBHOOK_ALLOWED_HOSTS", "").split(",") if h.strip()
            ),
            webhook_timeout_seconds=float(e.get("WEBHOOK_TIMEOUT_SECONDS", cls.webhook_timeout_seconds)),
            webhook_retry_seconds=float(e.get("WEBHOOK_RETRY_SECONDS", cls.webhook_retry_seconds)),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that from_env() reads back as these settings (for child processes)."""
        profiles = {
            name: {k: v for k, v in p.__dict__.items() if k != "name"} for name, p in self.profiles.items()
        }
        env = {
            "REDIS_URL": self.redis_url,
            "S3_ENDPOINT_URL": self.s3_endpoint_url or "",
            "S3_PUBLIC_ENDPOINT_URL": self.s3_public_endpoint_url or "",
            "S3_BUCKET": self.s3_bucket,
            "S3_REGION": self.s3_region,
            "PRESIGN_TTL_SECONDS": str(self.presign_ttl),
            "LLM_PROFILES": json.dumps(profiles),
            "DEFAULT_PROFILE": self.default_profile or "",
            "RQ_QUEUE": self.queue,
            "JOB_TIMEOUT_SECONDS": str(self.job_timeout),
            "INSTANCE_CHUNK_SIZE": str(self.instance_chunk_size),
            "MAX_REQUEST_BYTES": str(self.max_request_bytes),
            "MAX_SEED_TASKS": str(self.max_seed_tasks),
            "MAX_INSTRUCTIONS": str(self.max_instructions),
            "LOG_LEVEL": self.log_level,
            "WORK_DIR": self.work_dir,
            "S3_RETRY_SECONDS": str(self.s3_retry_seconds),
            "REDIS_RETRY_SECONDS": str(self.redis_retry_seconds),
            "JOB_RETRIES": str(self.job_retries),
            "AUTH_DISABLED": "1" if self.auth_disabled else "",
            "RATE_LIMIT_PER_MINUTE": str(self.rate_limit_per_minute),
            "MAX_ACTIVE_JOBS_PER_TEAM": str(self.max_active_jobs),
            "JOB_RETENTION_SECONDS": str(self.job_retention_seconds),
            "MAX_URL_CHARS": str(self.max_url_chars),
            "GUNICORN_LIMIT_REQUEST_LINE": str(self.gunicorn_limit_request_line),
            "GUNICORN_LIMIT_REQUEST_FIELDS": str(self.gunicorn_limit_request_fields),
            "GUNICORN_LIMIT_REQUEST_FIELD_SIZE": str(self.gunicorn_limit_request_field_size),
            "PREVIEW_QUEUE": self.preview_queue,
            "PREVIEW_MAX_INSTRUCTIONS": str(self.preview_max_instructions),
            "PREVIEW_WAIT_SECONDS": str(self.preview_wait_seconds),
            "PREVIEW_RETENTION_SECONDS": str(self.preview_retention_seconds),
            "MAX_JOB_EVENTS": str(self.max_job_events),
            "PROGRESS_EVENT_SECONDS": str(self.progress_event_seconds),
            "WEBHOOK_ALLOWED_HOSTS": ",".join(self.webhook_allowed_hosts),
            "WEBHOOK_TIMEOUT_SECONDS": str(self.webhook_timeout_seconds),
            "WEBHOOK_RETRY_SECONDS": str(self.webhook_retry_seconds),
            "BATCH_POLL_SECONDS": str(self.batch_poll_seconds),
        }
        return env


@cache
def get_settings() -> Settings:
    return Settings.from_env()
