"""Prometheus metrics of the work: LLM requests, tokens, retries, latency, dedup time, decisions, and
(read from Redis at scrape time) queue depths and jobs by state.

Workers fork a work horse per job, so their metrics live in prometheus_client's multiprocess mode:
`python -m jobs.worker` runs with PROMETHEUS_MULTIPROC_DIR set and serves them on METRICS_PORT.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from redis import Redis
from rq import Queue
from rq.registry import DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from api_spec.vocabulary import JOB_STATES

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

LLM_REQUESTS = Counter(
    "selfinstruct_llm_requests_total",
    "LLM requests, by stage and outcome (ok, or error after every retry)",
    ["stage", "outcome"],
)
LLM_SECONDS = Histogram(
    "selfinstruct_llm_request_seconds",
    "Latency of successful LLM requests",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
LLM_RETRIES = Counter(
    "selfinstruct_llm_retries_total", "Failed LLM attempts, by kind (429, 500, timeout, ...)", ["kind"]
)
LLM_TOKENS = Counter(
    "selfinstruct_llm_tokens_total", "Tokens, by stage and kind (prompt, completion)", ["stage", "kind"]
)
DEDUP_SECONDS = Histogram(
    "selfinstruct_dedup_seconds",
    "Time to find a candidate's nearest pool item (ROUGE-L index)",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
CANDIDATES = Counter(
    "selfinstruct_candidates_total", "Decisions, by stage, verdict and rule", ["stage", "verdict", "rule"]
)

JOBS_BY_STATE = "si:stats:jobs_by_state"  # a Redis hash the job state machine keeps


class RedisCollector:
    """Queue depths (RQ's list and registries) and jobs by state, read from Redis at scrape time."""

    def __init__(self, redis: Redis, queue: str):
        self.redis, self.queue = redis, queue

    def collect(self) -> Iterator[Metric]:
        q = Queue(self.queue, connection=self.redis)
        depth = GaugeMetricFamily(
            "selfinstruct_queue_jobs", "RQ jobs in the queue, by registry", labels=["registry"]
        )
        depth.add_metric(["queued"], q.count)
        for name, registry in (
            ("started", StartedJobRegistry),
            ("deferred", DeferredJobRegistry),
            ("scheduled", ScheduledJobRegistry),
            ("failed", FailedJobRegistry),
        ):
            depth.add_metric([name], registry(queue=q).count)
        yield depth
        counts = {k.decode(): int(v) for k, v in self.redis.hgetall(JOBS_BY_STATE).items()}
        jobs = GaugeMetricFamily("selfinstruct_jobs", "Generation jobs, by state", labels=["state"])
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs


def serve(port: int, redis: Redis, queue: str) -> None:
    """Serve every process's metrics (multiprocess mode) plus the Redis-read gauges on `port`."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    registry.register(RedisCollector(redis, queue))
    start_http_server(port, registry=registry)
