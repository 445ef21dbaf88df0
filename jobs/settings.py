"""Deployment settings, all from environment variables with documented defaults (docs/configuration.md).

One run's parameters (its recipe) are in jobs.method.recipe; this module is the environment the
service and workers run in: where Redis and S3 are, which LLM endpoints the operator offers,
and the limits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

from jobs.method.endpoint import EmbeddingEndpoint, Endpoint, Prices
from jobs.webhooks import check_allowlist


def _prices(value: Any, what: str) -> Prices | None:
    """{"prompt": p, "completion": c}, what a million tokens cost, as a pair."""
    if value is None:
        return None
    if not (
        isinstance(value, dict)
        and set(value) == {"prompt", "completion"}
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value.values())
    ):
        raise ValueError(f"{what} is {{prompt, completion}}, non-negative numbers")
    return float(value["prompt"]), float(value["completion"])


def _embeddings(value: Any) -> tuple[EmbeddingEndpoint, str | None] | None:
    """A profile's `embeddings`: {base_url, model, api_key_env?, price_per_million_tokens?, timeout?,
    batch?}, for semantic deduplication; with its key's variable (None: the profile's)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(value.get(k), str) and value[k] for k in ("base_url", "model")
    ):
        raise ValueError("embeddings is {base_url, model, ...}, both non-empty strings")
    options = dict(value)
    key_env = options.pop("api_key_env", None)
    price = options.pop("price_per_million_tokens", None)
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or price < 0):
        raise ValueError("embeddings.price_per_million_tokens is a non-negative number")
    if unknown := set(options) - {"base_url", "model", "timeout", "batch"}:
        raise ValueError(f"embeddings: unknown option(s) {sorted(unknown)}")
    return EmbeddingEndpoint(**options, api_key="", price=None if price is None else float(price)), key_env


@dataclass(frozen=True)
class Profile:
    """An LLM endpoint the operator offers under a name. Callers pick a name, never a URL or key.

    `endpoint` is held as configured, without its key: the key is read from the `api_key_env` variable
    when a run connects (keyed), never stored in config. Its prices are those of its mode; the profile
    keeps both (`mode_prices`) to price a preview's estimate either way."""

    name: str
    endpoint: Endpoint
    api_key_env: str | None = None
    concurrency: int = 2  # requests in flight at once, per run
    online_prices: Prices | None = None
    batch_prices: Prices | None = None  # the Batch API's (default: the online prices)
    # where semantic deduplication's embeddings come from (None: the profile offers none), and the
    # variable holding its key (None: the profile's own)
    embeddings: EmbeddingEndpoint | None = None
    embeddings_key_env: str | None = None

    # the profile's own options in LLM_PROFILES; every other option is the endpoint's (jobs.method.endpoint)
    OWN = (
        "api_key_env",
        "concurrency",
        "price_per_million_tokens",
        "batch_price_per_million_tokens",
        "embeddings",
    )

    @classmethod
    def of(cls, name: str, base_url: str, model: str, **options: Any) -> Profile:
        """From the operator's options (an LLM_PROFILES entry), checked when the settings load, not when a
        job first calls the endpoint; a ValueError names the profile and the option."""
        own = {k: options.pop(k) for k in cls.OWN if k in options}
        try:
            online = _prices(own.get("price_per_million_tokens"), "price_per_million_tokens")
            batch = _prices(own.get("batch_price_per_million_tokens"), "batch_price_per_million_tokens")
            mode = options.get("mode", "online")
            prices = (batch or online) if mode == "batch" else online
            endpoint = Endpoint(base_url=base_url, model=model, api_key="", prices=prices, **options)
            embeddings, embeddings_key_env = _embeddings(own.get("embeddings")) or (None, None)
        except TypeError as e:  # an option that is neither the profile's nor the endpoint's
            raise ValueError(f"profile {name!r}: unknown option ({e})") from None
        except ValueError as e:
            raise ValueError(f"profile {name!r}: {e}") from None
        return cls(
            name,
            endpoint,
            own.get("api_key_env"),
            own.get("concurrency", 2),
            online,
            batch,
            embeddings,
            embeddings_key_env,
        )

    @property
    def mode(self) -> str:
        return self.endpoint.mode

    @property
    def prices(self) -> Prices | None:
        """Per million prompt and completion tokens, in the profile's mode."""
        return self.endpoint.prices

    def mode_prices(self, mode: str) -> Prices | None:
        return (self.batch_prices or self.online_prices) if mode == "batch" else self.online_prices

    def keyed(self) -> Endpoint:
        """The endpoint with its key, for a run."""
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return replace(self.endpoint, api_key=key or "sk-none")

    def keyed_embeddings(self) -> EmbeddingEndpoint | None:
        """The embedding endpoint with its key, for a run (None: the profile has none)."""
        if self.embeddings is None:
            return None
        env = self.embeddings_key_env or self.api_key_env
        key = os.environ.get(env, "") if env else ""
        return replace(self.embeddings, api_key=key or "sk-none")

    def with_options(self, **changes: Any) -> Profile:
        """This profile with some options (LLM_PROFILES' names, or `name`) changed, checked again."""
        name = changes.pop("name", self.name)
        return Profile.of(name, **{**self.options(), **changes})

    def options(self) -> dict[str, Any]:
        """The LLM_PROFILES entry that `of` reads back as this profile."""
        defaults = {f.name: f.default for f in fields(Endpoint)}
        skip = ("base_url", "model", "api_key", "prices")
        out = {f.name: getattr(self.endpoint, f.name) for f in fields(Endpoint) if f.name not in skip}
        out = {k: v for k, v in out.items() if v != defaults[k]}
        for key, prices in (
            ("price_per_million_tokens", self.online_prices),
            ("batch_price_per_million_tokens", self.batch_prices),
        ):
            if prices is not None:
                out[key] = {"prompt": prices[0], "completion": prices[1]}
        if (e := self.embeddings) is not None:
            given = {"base_url": e.base_url, "model": e.model, "timeout": e.timeout, "batch": e.batch}
            given |= {"api_key_env": self.embeddings_key_env} if self.embeddings_key_env else {}
            given |= {"price_per_million_tokens": e.price} if e.price is not None else {}
            out["embeddings"] = given
        return {
            "base_url": self.endpoint.base_url,
            "model": self.endpoint.model,
            "api_key_env": self.api_key_env,
            "concurrency": self.concurrency,
            **out,
        }


def _profiles(raw: str) -> dict[str, Profile]:
    if not raw.strip():
        return {}
    text = Path(raw).read_text() if not raw.lstrip().startswith("{") else raw
    data: dict[str, dict[str, Any]] = json.loads(text)
    return {name: Profile.of(name, **options) for name, options in data.items()}


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
    # a team's generation RQ jobs (main runs and chunks) queued or running at once: teams take turns
    # (jobs.runner.queue); about the number of workers, so one team alone keeps them all busy
    team_job_slots: int = 8
    # a main run's requests (stages 1 and 2, and instances that fit one chunk) are answered by up to
    # this many workers, its own included (1: by its own alone); each helper works for a
    # turn of spread_turn_seconds, then gives its worker back (other teams' work waiting gets it first)
    spread_workers: int = 8
    spread_turn_seconds: float = 15.0
    max_request_bytes: int = 8 * 1024 * 1024
    max_seed_tasks: int = 10_000
    max_reference_items: int = 200_000
    max_instructions: int = 100_000
    log_level: str = "INFO"
    work_dir: str = "/tmp"
    s3_retry_seconds: float = 60.0
    redis_retry_seconds: float = 60.0
    # the API refuses new work (503, Retry-After) above this share of Redis's maxmemory (0: never)
    redis_memory_limit: float = 0.9
    # a checkpoint commit waits for this many replicas (Sentinel setups: a failover then loses none)
    redis_wait_replicas: int = 0
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
    # a job's push_to_hub: the variable holding the Hub token (None: no pushing), and the Hub
    hub_token_env: str | None = None
    hub_endpoint: str = "https://huggingface.co"
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
            team_job_slots=int(e.get("TEAM_JOB_SLOTS", cls.team_job_slots)),
            spread_workers=int(e.get("SPREAD_WORKERS", cls.spread_workers)),
            spread_turn_seconds=float(e.get("SPREAD_TURN_SECONDS", cls.spread_turn_seconds)),
            max_request_bytes=int(e.get("MAX_REQUEST_BYTES", cls.max_request_bytes)),
            max_seed_tasks=int(e.get("MAX_SEED_TASKS", cls.max_seed_tasks)),
            max_reference_items=int(e.get("MAX_REFERENCE_ITEMS", cls.max_reference_items)),
            max_instructions=int(e.get("MAX_INSTRUCTIONS", cls.max_instructions)),
            log_level=e.get("LOG_LEVEL", cls.log_level),
            work_dir=e.get("WORK_DIR", cls.work_dir),
            s3_retry_seconds=float(e.get("S3_RETRY_SECONDS", cls.s3_retry_seconds)),
            redis_retry_seconds=float(e.get("REDIS_RETRY_SECONDS", cls.redis_retry_seconds)),
            redis_memory_limit=float(e.get("REDIS_MEMORY_LIMIT", cls.redis_memory_limit)),
            redis_wait_replicas=int(e.get("REDIS_WAIT_REPLICAS", cls.redis_wait_replicas)),
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
            hub_token_env=e.get("HUB_TOKEN_ENV") or None,
            hub_endpoint=e.get("HUB_ENDPOINT", cls.hub_endpoint),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that from_env() reads back as these settings (for child processes)."""
        profiles = {name: p.options() for name, p in self.profiles.items()}
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
            "TEAM_JOB_SLOTS": str(self.team_job_slots),
            "SPREAD_WORKERS": str(self.spread_workers),
            "SPREAD_TURN_SECONDS": str(self.spread_turn_seconds),
            "MAX_REQUEST_BYTES": str(self.max_request_bytes),
            "MAX_SEED_TASKS": str(self.max_seed_tasks),
            "MAX_REFERENCE_ITEMS": str(self.max_reference_items),
            "MAX_INSTRUCTIONS": str(self.max_instructions),
            "LOG_LEVEL": self.log_level,
            "WORK_DIR": self.work_dir,
            "S3_RETRY_SECONDS": str(self.s3_retry_seconds),
            "REDIS_RETRY_SECONDS": str(self.redis_retry_seconds),
            "REDIS_MEMORY_LIMIT": str(self.redis_memory_limit),
            "REDIS_WAIT_REPLICAS": str(self.redis_wait_replicas),
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
            "HUB_TOKEN_ENV": self.hub_token_env or "",
            "HUB_ENDPOINT": self.hub_endpoint,
            "WEBHOOK_TIMEOUT_SECONDS": str(self.webhook_timeout_seconds),
            "WEBHOOK_RETRY_SECONDS": str(self.webhook_retry_seconds),
            "BATCH_POLL_SECONDS": str(self.batch_poll_seconds),
        }
        return env


@cache
def get_settings() -> Settings:
    return Settings.from_env()
