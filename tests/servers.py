"""Real servers for tests and the demo, each on a private loopback port: Redis, an S3 endpoint
(rclone serve s3), gunicorn with the app, and RQ workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
S3_KEY, S3_SECRET = "test-access-key", "test-secret-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def redis_server(directory: Path, port: int | None = None, appendonly: bool = False) -> tuple[Process, str]:
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
        args += ["--appendfsync", "always"]
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


def rq_worker(env: dict[str, str], log: Path) -> Process:
    """An RQ worker process (jobs.worker: tuned heartbeats, checkpoint on SIGTERM)."""
    return Process([sys.executable, "-m", "jobs.worker"], log, {"METRICS_PORT": "0", **env})
