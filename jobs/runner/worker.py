"""The RQ worker: `python -m jobs.runner.worker` (settings from the environment, JSON logs).

Two departures from a stock `rq worker`, both for long generation jobs:

- A dead worker's job is noticed quickly. RQ leaves a killed worker's job in the started registry
  until its heartbeat entry expires (60 s past the monitoring interval by default) and a live
  worker's maintenance pass (every 10 minutes by default, and only between blocking dequeues of
  `worker_ttl - 15` s) moves it out. Here the entry expires HEARTBEAT_SLACK seconds after a missed
  heartbeat and idle workers run maintenance every MAINTENANCE_INTERVAL seconds, so an abandoned job
  is re-queued (jobs are enqueued with retries) within ABANDONED_BOUND seconds.
- SIGTERM (Kubernetes stopping a pod) asks the running job to checkpoint and hand itself back: the
  worker forwards SIGUSR1 to the work horse, the engine stops after the request in hand, commits,
  and the job goes back on the queue for another worker, which resumes from the checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

from redis import Redis
from rq import Queue
from rq import Worker as RQWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.job import Job
from rq.scheduler import RQScheduler

from jobs import logs
from jobs.runner import PREEMPT_SIGNAL
from jobs.settings import get_settings
from jobs.store.connection import connect

MONITORING_INTERVAL = int(os.environ.get("WORKER_MONITORING_INTERVAL", "5"))
HEARTBEAT_SLACK = int(os.environ.get("WORKER_HEARTBEAT_SLACK", "15"))
MAINTENANCE_INTERVAL = int(os.environ.get("WORKER_MAINTENANCE_INTERVAL", "10"))
WORKER_TTL = 30  # idle workers wake from their blocking dequeue every WORKER_TTL - 15 s
ABANDONED_BOUND = MONITORING_INTERVAL + HEARTBEAT_SLACK + max(MAINTENANCE_INTERVAL, WORKER_TTL - 15)
HORSE_NAME = "rq-work-horse"  # a work horse's process name (Linux keeps 15 characters)


class Scheduler(RQScheduler):
    """RQ's scheduler, on a connection made from REDIS_URL in its own process: RQ would rebuild the
    worker's connection from its pool's arguments, which a Sentinel-managed pool does not allow."""

    @property
    def connection(self) -> Redis:
        if self._connection is None:
            self._connection = connect(get_settings().redis_url)
        return self._connection


class Worker(RQWorker):
    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's own start of its scheduler (a lock, then a process of its own), with Scheduler."""
        self.scheduler = Scheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if not self.scheduler.acquired_locks:
            return
        if not burst:
            self.scheduler.start()
            return
        try:
            self.scheduler.register_birth()
            self.scheduler.enqueue_scheduled_jobs()
        finally:
            self.scheduler.release_locks()
            self.scheduler.register_death()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.job_monitoring_interval + HEARTBEAT_SLACK

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        # named apart from the worker and its scheduler (same command line, all forked): `ps -o comm`
        with contextlib.suppress(OSError):
            Path("/proc/self/comm").write_text(HORSE_NAME)
        super().main_work_horse(job, queue)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            self.log.info("Worker %s: asking the running job to checkpoint and hand itself back", self.name)
            self.kill_horse(sig=PREEMPT_SIGNAL)


METRICS_PORT = int(os.environ.get("METRICS_PORT", "9100"))  # 0: no metrics endpoint


def _multiprocess_metrics_dir() -> None:
    """Work horses are forked per job: their metrics must go through files (multiprocess mode).
    The variable must be set before prometheus_client is imported, so set it and start again."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="selfinstruct-metrics-")
        os.execv(sys.executable, [sys.executable, "-m", "jobs.runner.worker", *sys.argv[1:]])
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # from a previous worker in this pod
        stale.unlink()


def main() -> None:
    _multiprocess_metrics_dir()
    settings = get_settings()
    logs.configure(settings.log_level)
    # The modules of the functions RQ jobs name (the method, the transport, openai), imported once here,
    # after the metrics directory is swept: a work horse is forked per RQ job and would import them
    # again, about a second of CPU a chunk.
    from jobs.runner import delivery, finalize, generation, preview  # noqa: F401

    connection = connect(settings.redis_url)
    if METRICS_PORT:
        from jobs.runner import metrics_server

        try:
            metrics_server.serve(METRICS_PORT, connection, settings.queue)
        except OSError as e:  # metrics are not worth refusing work for
            logs.structlog.get_logger(__name__).warning("metrics_not_served", port=METRICS_PORT, error=str(e))
    # WORKER_QUEUES: which queues this worker serves, e.g. the preview queue for a preview worker
    names = [n.strip() for n in os.environ.get("WORKER_QUEUES", settings.queue).split(",") if n.strip()]
    worker = Worker(
        [Queue(name, connection=connection) for name in names],
        connection=connection,
        job_monitoring_interval=MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL,
        worker_ttl=WORKER_TTL,
    )
    # the scheduler enqueues batch-mode polls when they are due (jobs.runner.generation.poll)
    worker.work(logging_level=settings.log_level.upper(), with_scheduler=True)


if __name__ == "__main__":
    main()
