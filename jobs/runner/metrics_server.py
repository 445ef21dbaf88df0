"""A worker's Prometheus endpoint: the method's counters (jobs.method.transport.metrics) from every process,
plus queue depths and jobs by state, read from Redis at scrape time.

Workers fork a work horse per job, so their metrics live in prometheus_client's multiprocess mode:
`python -m jobs.runner.worker` runs with PROMETHEUS_MULTIPROC_DIR set and serves them on METRICS_PORT.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from redis import Redis
from rq import Queue
from rq.rate_limit import RateLimitRegistry
from rq.registry import DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from jobs.store import keyspace
from jobs.store.job import JOB_STATES


class RedisCollector:
    """Queue depths (RQ's list and registries) and jobs by state, read from Redis at scrape time."""

    def __init__(self, redis: Redis, queue: str):
        self.redis, self.queue = redis, queue

    def collect(self) -> Iterator[Metric]:
        q = Queue(self.queue, connection=self.redis)
        depth = GaugeMetricFamily(
            "selfinstruct_queue_jobs",
            "RQ jobs in the queue, by registry (waiting: for their team's turn)",
            labels=["registry"],
        )
        depth.add_metric(["queued"], q.count)
        # generation RQ jobs waiting for their team's turn (jobs.runner.queue): work to scale for too
        waiting = sum(r.get_rate_limited_job_count() for r in RateLimitRegistry.all(self.redis))
        depth.add_metric(["waiting"], waiting)
        for name, registry in (
            ("started", StartedJobRegistry),
            ("deferred", DeferredJobRegistry),
            ("scheduled", ScheduledJobRegistry),
            ("failed", FailedJobRegistry),
        ):
            depth.add_metric([name], registry(queue=q).count)
        yield depth
        counts = {k.decode(): int(v) for k, v in self.redis.hgetall(keyspace.JOBS_BY_STATE).items()}
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
