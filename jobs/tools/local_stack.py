"""The whole stack on one machine: Redis, an S3 endpoint (rclone serve s3), the embedded model,
gunicorn with the API and RQ workers, each a child process on loopback.

    python -m jobs.tools.local_stack        # scripts/serve.sh: fixed ports, stays up until Ctrl-C

The demo and the tests start their parts with the same functions, on private ports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from jobs.settings import Profile, Settings
from jobs.tools.embedding_model import EMBEDDING_ALIAS, EmbeddingModel
from jobs.tools.local_model import MODEL_ALIAS, PARALLEL, REQUEST_OPTIONS, LocalModel, free_port

BIN = Path(sys.executable).parent
S3_KEY, S3_SECRET = "test-access-key", "test-secret-key-0123456789"


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class Process:
    """A child process in its own process group, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, args: list[str], log: Path | None = None, env: dict[str, str] | None = None):
        self.log = log
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()


def redis_server(
    directory: Path, port: int | None = None, appendonly: bool = False, appendfsync: str = "always"
) -> tuple[Process, str]:
    """`appendfsync` applies with `appendonly`: "always", "everysec" (the chart's) or "no"."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        shutil.which("redis-server") or "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
    ]
    if appendonly:
        args += ["--appendfsync", appendfsync]
    proc = Process(args, directory / "redis.log")
    wait_for_port(port, proc.proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def s3_server(directory: Path, port: int | None = None) -> tuple[Process, str]:
    port = port or free_port()
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    rclone = str(BIN / "rclone") if (BIN / "rclone").exists() else "rclone"
    proc = Process(
        [
            rclone,
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{S3_KEY},{S3_SECRET}",
            str(data),
        ],
        directory / "rclone.log",
    )
    wait_for_port(port, proc.proc)
    return proc, f"http://127.0.0.1:{port}"


def gunicorn(
    env: dict[str, str], log: Path, port: int | None = None, workers: int = 2
) -> tuple[Process, str]:
    port = port or free_port()
    metrics_dir = log.parent / f"metrics-{port}"  # multiprocess metrics: a fresh directory a server
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **env}
    proc = Process(
        [
            str(BIN / "gunicorn"),
            "-c",
            "service/gunicorn_conf.py",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "service.app:create_app()",
        ],
        log,
        env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.proc.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop()
    raise TimeoutError("gunicorn did not answer")


def rq_worker(env: dict[str, str], log: Path, queues: str | None = None) -> Process:
    """An RQ worker process (jobs.runner.worker: tuned heartbeats, checkpoint on SIGTERM); `queues`: the
    comma-separated queues it serves (default: the generation queue)."""
    extra = {"WORKER_QUEUES": queues} if queues else {}
    return Process([sys.executable, "-m", "jobs.runner.worker"], log, {"METRICS_PORT": "0", **env, **extra})


@dataclass(frozen=True)
class Ports:
    """0: a free port. `scripts/serve.sh` uses FIXED, so the README's examples work as written."""

    api: int = 0
    redis: int = 0
    s3: int = 0
    model: int = 0


FIXED = Ports(api=8000, redis=6390, s3=9000, model=8090)


class Stack:
    """Every part of the service on this machine, started in order and stopped in reverse.

    `endpoint`: (base_url, model) of an OpenAI-compatible endpoint; None starts the embedded model.
    """

    def __init__(
        self,
        run_dir: Path,
        ports: Ports = Ports(),
        workers: int = 1,
        endpoint: tuple[str, str] | None = None,
        team: str = "local",
    ):
        self.run_dir, self.ports, self.workers, self.endpoint, self.team = (
            run_dir,
            ports,
            workers,
            endpoint,
            team,
        )
        self.parts: list[Process | LocalModel] = []
        self.url = ""
        self.api_key = ""
        self.settings: Settings | None = None

    def start(self, say: Callable[[str], None] = lambda message: None) -> Stack:
        from redis import Redis

        from jobs.blobs.artifacts import Artifacts
        from jobs.store import api_keys

        run = self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
        try:
            say(f"starting Redis and the S3 endpoint (logs in {run}/)")
            redis, redis_url = redis_server(run / "redis", self.ports.redis or None, appendonly=True)
            self.parts.append(redis)
            s3, s3_url = s3_server(run / "s3", self.ports.s3 or None)
            self.parts.append(s3)
            if self.endpoint is None:
                say("starting the embedded model")
                model = LocalModel(self.ports.model or None, log_file=run / "model.log").start()
                self.parts.append(model)
                base_url, model_name = model.base_url, MODEL_ALIAS
            else:
                base_url, model_name = self.endpoint
            # the embedding model, for semantic_threshold (a second llama-server, about 80 MB)
            embedder = EmbeddingModel(log_file=run / "embedding-model.log").start()
            self.parts.append(embedder)
            embeddings = {"base_url": embedder.base_url, "model": EMBEDDING_ALIAS}
            self.settings = Settings(
                redis_url=redis_url,
                s3_endpoint_url=s3_url,
                s3_public_endpoint_url=s3_url,
                profiles={
                    "local": Profile.of(
                        "local",
                        base_url,
                        model_name,
                        timeout=300,
                        concurrency=PARALLEL if self.endpoint is None else 1,
                        embeddings=embeddings,
                        **(REQUEST_OPTIONS if self.endpoint is None else {}),
                    )
                },
                default_profile="local",
                work_dir=str(run),
            )
            Artifacts(self.settings).ensure_bucket()
            self.api_key = api_keys.create(Redis.from_url(redis_url), self.team, "local")[1]
            env = {**self.settings.to_env(), "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
            say(f"starting gunicorn, {self.workers} worker(s) and a preview worker")
            api, self.url = gunicorn(env, run / "gunicorn.log", self.ports.api or None)
            self.parts.append(api)
            for i in range(self.workers):
                self.parts.append(rq_worker(env, run / f"worker{i}.log"))
            # previews have a worker of their own: a long job never holds one up
            self.parts.append(rq_worker(env, run / "preview-worker.log", self.settings.preview_queue))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        while self.parts:
            self.parts.pop().stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the whole stack until Ctrl-C.", allow_abbrev=False)
    parser.add_argument("--run-dir", default=".run/serve", help="logs and data (default: .run/serve)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint instead of the embedded model")
    parser.add_argument("--model", default="default", help="the model name at --base-url")
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    endpoint = (args.base_url, args.model) if args.base_url else None
    stack = Stack(run_dir, FIXED, args.workers, endpoint)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stack.start(lambda message: print(f"==> {message}", flush=True))
        settings = stack.settings
        assert settings is not None
        print(
            f"""
The stack is up (logs in {run_dir}/). In another shell:

    export SELFINSTRUCT_URL={stack.url} SELFINSTRUCT_API_KEY={stack.api_key}
    curl -s $SELFINSTRUCT_URL/v1/profiles -H "Authorization: Bearer $SELFINSTRUCT_API_KEY"
    .venv/bin/selfinstruct preview data/seed_tasks.jsonl --for 200
    .venv/bin/selfinstruct submit data/seed_tasks.jsonl --instructions 5 --wait --download out/try

Redis: {settings.redis_url}  S3: {settings.s3_endpoint_url} (key {S3_KEY})
Press Ctrl-C to stop everything.""",
            flush=True,
        )
        while not stopped.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("==> stopping", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
