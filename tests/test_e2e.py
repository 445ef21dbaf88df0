"""End to end: gunicorn, an `rq worker` process and the local model; the `selfinstruct` command submits,
waits and downloads; a plain HTTP client pages decisions and fetches every export by presigned URL."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace

import httpx
import pyarrow.parquet as pq
import pytest

from jobs.settings import Profile
from jobs.tools.local_model import PARALLEL, REQUEST_OPTIONS
from jobs.tools.local_stack import gunicorn, rq_worker
from tests.conftest import DATA, ROOT

BIN = os.path.dirname(sys.executable)


@pytest.fixture
def stack(settings, local_model, tmp_path, api_key):
    profile = Profile.of("local", local_model.base_url, local_model.model, timeout=300, concurrency=PARALLEL)
    cfg = replace(settings, profiles={"local": profile}, default_profile="local", log_level="INFO")
    env = {
        **cfg.to_env(),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    api, url = gunicorn(env, tmp_path / "gunicorn.log")
    worker = rq_worker(env, tmp_path / "worker.log")
    os.environ["SELFINSTRUCT_API_KEY"] = api_key
    yield url, tmp_path
    os.environ.pop("SELFINSTRUCT_API_KEY", None)
    worker.stop()
    api.stop()


def selfinstruct(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(BIN, "selfinstruct"), "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.model
def test_submit_wait_download_through_gunicorn_and_a_worker(stack):
    url, tmp = stack
    out = tmp / "dataset"
    done = selfinstruct(
        url,
        "submit",
        str(DATA / "seed_tasks.jsonl"),
        "--instructions",
        "3",
        "--seed",
        "4",
        "--wait",
        "--download",
        str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr + (tmp / "worker.log").read_text()[-3000:]
    job_id = re.search(r"job ([0-9a-f]{32}) queued", done.stdout).group(1)
    assert f"job {job_id}: succeeded; 3 instructions" in done.stdout

    http = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {os.environ['SELFINSTRUCT_API_KEY']}"}
    )
    job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["progress"]["instructions_kept"] == 3
    # decisions, paged by cursor, and filtered
    seen, cursor = [], None
    while True:
        page = http.get(
            f"/v1/jobs/{job_id}/decisions", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    kept = http.get(f"/v1/jobs/{job_id}/decisions", params={"stage": "instruction", "verdict": "kept"}).json()
    assert (
        kept["total"] == 3 == len([d for d in seen if d["stage"] == "instruction" and d["verdict"] == "kept"])
    )
    assert all(d["detail"]["score"] <= 0.7 for d in kept["items"])

    # every export through its presigned URL, with a plain client, checked against the manifest
    manifest = http.get(f"/v1/jobs/{job_id}/dataset").json()
    files = {}
    for f in manifest["files"]:
        body = httpx.get(f["url"]).content
        assert hashlib.sha256(body).hexdigest() == f["sha256"]
        assert (out / f["name"]).read_bytes() == body  # what the command downloaded
        files[f["name"]] = body
    alpaca = json.loads(files["alpaca.json"])
    assert all(set(row) == {"instruction", "input", "output"} for row in alpaca)
    # classification_method auto asked the model about the seed tasks and says what it chose
    selection = json.loads(files["stats.json"])["classification_method"]["selection"]
    assert selection["tasks"] == 40 and set(selection["methods"]) == {
        "knn",
        "text",
        "logprobs",
        "calibrated",
        "fitted",
    }
    assert f"classification (auto): {selection['chosen']}, the cheapest within 0.1 of" in done.stdout
    assert "on 40 seed tasks outside the demonstrations" in done.stdout
    assert {row["instruction"] for row in alpaca} <= {d["text"] for d in kept["items"]}
    chat = [json.loads(line) for line in files["chat.jsonl"].decode().splitlines()]
    assert len(chat) == len(alpaca) and all(m["messages"][1]["role"] == "assistant" for m in chat)
    assert pq.read_table(io.BytesIO(files["dataset.parquet"])).num_rows == len(alpaca)
    finetune = [json.loads(line) for line in files["finetune.jsonl"].decode().splitlines()]
    assert all(row["completion"].endswith("<|endoftext|>") for row in finetune)
    assert len(files["decisions.jsonl"].decode().splitlines()) == len(seen)
    stats = json.loads(files["stats.json"])
    assert stats["instructions_kept"] == 3 and stats["tokens"]["completion"] > 0


@pytest.mark.model
def test_command_exit_codes(stack, tmp_path):
    url, _ = stack
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    result = selfinstruct(url, "submit", str(bad), "--instructions", "2")
    assert result.returncode == 2 and "line 1: instruction: Missing data for required field." in result.stderr
    assert selfinstruct(url, "submit", str(tmp_path / "missing.jsonl"), "--instructions", "2").returncode == 2
    assert (
        selfinstruct(
            "http://127.0.0.1:9", "submit", str(DATA / "seed_tasks.jsonl"), "--instructions", "2"
        ).returncode
        == 4
    )
    # a canceled job exits 3
    submitted = selfinstruct(url, "submit", str(DATA / "seed_tasks.jsonl"), "--instructions", "500")
    job_id = re.search(r"job ([0-9a-f]{32})", submitted.stdout).group(1)
    assert selfinstruct(url, "cancel", job_id).returncode == 0
    assert selfinstruct(url, "wait", job_id).returncode == 3


@pytest.mark.model
def test_a_chat_job_on_the_embedded_model(settings, local_model, tmp_path, api_key):
    """llama-server's /v1/chat/completions (Gemma's turn format, JSON replies) through the service."""
    profile = Profile.of(
        "local-chat",
        local_model.base_url,
        local_model.model,
        timeout=300,
        concurrency=PARALLEL,
        api="chat",
        response_format="json_object",
        **REQUEST_OPTIONS,
    )
    cfg = replace(settings, profiles={"local-chat": profile}, default_profile="local-chat")
    env = {
        **cfg.to_env(),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    api, url = gunicorn(env, tmp_path / "gunicorn.log")
    worker = rq_worker(env, tmp_path / "worker.log")
    try:
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
        seeds = http.post(
            "/v1/seed-sets",
            content=(DATA / "seed_tasks.jsonl").read_bytes(),
            headers={"Content-Type": "application/x-ndjson"},
        ).json()
        short = {"instructions": {"max_tokens": 160}, "instances": {"max_tokens": 160}}
        body = {"seed_set_id": seeds["id"], "num_instructions": 2, "max_requests": 2, "decoding": short}
        job = http.post("/v1/jobs", json=body).json()
        deadline = time.monotonic() + 900
        while (state := http.get(f"/v1/jobs/{job['id']}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, state
            time.sleep(2)
        assert state["state"] == "succeeded", (state, (tmp_path / "worker.log").read_text()[-3000:])
        decisions = http.get(f"/v1/jobs/{job['id']}/decisions", params={"limit": 100}).json()["items"]
        assert decisions and all(d["source"]["role"] == "assistant" for d in decisions)
        run = httpx.get(
            next(
                f["url"]
                for f in http.get(f"/v1/jobs/{job['id']}/dataset").json()["files"]
                if f["name"] == "run.json"
            )
        ).json()
        assert run["endpoint"]["api"] == "chat" and run["endpoint"]["response_format"] == "json_object"
        assert run["endpoint"]["max_tokens_param"] == "max_tokens" and run["endpoint"]["send_seed"] is True
    finally:
        worker.stop()
        api.stop()
