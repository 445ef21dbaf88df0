"""`scripts/serve.sh`'s stack (python -m jobs.tools.local_stack) as the README describes it: fixed ports, a
printed URL and key that the `selfinstruct` command works with, and Ctrl-C stops every part. Also:
no command-line parser accepts an abbreviated option."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.tools.local_stack import FIXED
from tests.conftest import DATA, ROOT

BIN = Path(sys.executable).parent


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_runs_the_stack_on_fixed_ports_until_ctrl_c(fake_llm, tmp_path) -> None:
    ports = (FIXED.api, FIXED.redis, FIXED.s3)
    if any(listening(p) for p in ports):
        pytest.fail(f"a fixed port of the local stack is taken: {[p for p in ports if listening(p)]}")
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.tools.local_stack",
            "--base-url",
            fake_llm.base_url,
            "--model",
            "fake",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    try:
        assert serve.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = serve.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(output)
        found = re.search(r"export SELFINSTRUCT_URL=(\S+) SELFINSTRUCT_API_KEY=(\S+)", text)
        assert found, text
        url, key = found.groups()
        assert url == f"http://127.0.0.1:{FIXED.api}"
        assert all(listening(p) for p in ports)
        done = subprocess.run(
            [
                str(BIN / "selfinstruct"),
                "submit",
                str(DATA / "seed_tasks.jsonl"),
                "--instructions",
                "3",
                "--wait",
                "--download",
                str(tmp_path / "out"),
            ],
            env={**os.environ, "SELFINSTRUCT_URL": url, "SELFINSTRUCT_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "out" / "alpaca.json").stat().st_size > 0
    finally:
        serve.send_signal(signal.SIGINT)
        rest, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0, "".join(output) + rest
    assert "stopping" in rest
    assert not any(listening(p) for p in ports)


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "jobs", "generate", "--seed-tasks", "x.jsonl", "--out", "o", "--num", "5"],
        [sys.executable, "-m", "jobs.tools.dedup", "--pool", "p.jsonl", "--thresh", "0.5"],
        [sys.executable, "-m", "jobs.tools.keys", "create", "--tea", "alpha"],
        [sys.executable, "-m", "jobs.tools.local_stack", "--work", "3"],
        [str(BIN / "selfinstruct"), "--ur", "http://127.0.0.1:9", "cancel", "x"],
        [str(BIN / "selfinstruct"), "submit", "s.jsonl", "--instr", "5"],
    ],
    ids=["generate", "dedup", "api_keys", "local_stack", "selfinstruct", "selfinstruct-submit"],
)
def test_no_parser_accepts_an_abbreviated_option(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert any(m in done.stderr for m in ("unrecognized arguments", "invalid choice", "required")), (
        done.stderr
    )
