"""A job's push_to_hub: the finished dataset goes to a Hub dataset repository as one commit, through
huggingface_hub's HTTP API, here against a scripted Hub (no test needs the internet) that speaks the
endpoints a push uses: create the repository, validate the README's YAML, preupload, commit."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from jobs.settings import get_settings
from service.app import create_app
from tests.conftest import work
from tests.test_api import make_seed_set

TOKEN = "hf_test_token_1234567890"


class Hub:
    """The Hub's endpoints a push calls, recording what it was sent; `fail`: answer commits with 500."""

    def __init__(self, fail: bool = False) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.repos: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}  # repo -> path -> content
        self.fail = fail
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.requests.append(("POST", self.path, dict(self.headers)))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"error": "Invalid credentials"})
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    body = json.loads(raw)
                    repo = f"{body['organization']}/{body['name']}"
                    hub.repos[repo] = body
                    return self._answer(200, {"url": f"{hub.url}/datasets/{repo}"})
                if path == "/api/validate-yaml":
                    return self._answer(200, {})
                parts = path.split("/")  # /api/datasets/<ns>/<name>/<op>/<revision>
                repo, op = f"{parts[3]}/{parts[4]}", parts[5]
                if op == "preupload":
                    files = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in json.loads(raw)["files"]
                    ]
                    return self._answer(200, {"files": files})
                if op == "commit":
                    if hub.fail:
                        return self._answer(500, {"error": "the Hub is down"})
                    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
                    stored = hub.files.setdefault(repo, {})
                    for line in lines:
                        if line["key"] == "file":
                            stored[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    return self._answer(
                        200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/abc123", "commitOid": "abc123"}
                    )
                return self._answer(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub_settings(settings, monkeypatch):
    hub = Hub()
    pushing = replace(settings, hub_token_env="TEST_HUB_TOKEN", hub_endpoint=hub.url)
    for name, value in pushing.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TEST_HUB_TOKEN", TOKEN)
    get_settings.cache_clear()
    yield pushing, hub
    get_settings.cache_clear()
    hub.close()


def client_for(settings, api_key):
    client = create_app(settings, configure_logging=False).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    return client


def test_a_finished_dataset_is_pushed_as_one_commit(hub_settings, redis, api_key) -> None:
    settings, hub = hub_settings
    client = client_for(settings, api_key)
    body = {
        "seed_set_id": make_seed_set(client),
        "num_instructions": 4,
        "push_to_hub": {"repo_id": "team-a/self-instruct"},
    }
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.json
    assert r.json["config"]["push_to_hub"] == {"repo_id": "team-a/self-instruct", "private": True}
    work(redis)
    job_id = r.json["id"]
    assert client.get(f"/v1/jobs/{job_id}").json["state"] == "succeeded"
    repo = hub.repos["team-a/self-instruct"]
    assert (repo["type"], repo["visibility"]) == ("dataset", "private")
    pushed = hub.files["team-a/self-instruct"]
    # every file of the dataset, byte for byte as its download
    manifest = {f["name"]: f for f in client.get(f"/v1/jobs/{job_id}/dataset").json["files"]}
    assert set(pushed) == set(manifest)
    assert all(hashlib.sha256(pushed[name]).hexdigest() == manifest[name]["sha256"] for name in manifest)
    assert pushed["README.md"].startswith(b"---\n")
    events = client.get(f"/v1/jobs/{job_id}/events", query_string={"limit": 1000}).json["items"]
    hub_events = [e["data"] for e in events if e["type"] == "hub"]
    assert hub_events == [
        {
            "repo_id": "team-a/self-instruct",
            "url": f"{hub.url}/datasets/team-a/self-instruct",
            "commit": "abc123",
        }
    ]
    assert all(TOKEN not in json.dumps(e) for e in events)


def test_a_failed_push_leaves_the_job_succeeded_and_says_why(hub_settings, redis, api_key) -> None:
    settings, hub = hub_settings
    hub.fail = True
    client = client_for(settings, api_key)
    body = {
        "seed_set_id": make_seed_set(client),
        "num_instructions": 3,
        "push_to_hub": {"repo_id": "team-a/x", "private": False},
    }
    job_id = client.post("/v1/jobs", json=body).json["id"]
    work(redis)
    assert client.get(f"/v1/jobs/{job_id}").json["state"] == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}/dataset").status_code == 200  # in S3 either way
    assert hub.repos["team-a/x"]["visibility"] == "public"
    events = client.get(f"/v1/jobs/{job_id}/events", query_string={"limit": 1000}).json["items"]
    failed = [e["data"] for e in events if e["type"] == "hub"]
    assert len(failed) == 1 and failed[0]["repo_id"] == "team-a/x" and "500" in failed[0]["error"]
    assert any(e["type"] == "warning" and "not pushed to team-a/x" in e["data"]["message"] for e in events)


def test_push_to_hub_is_refused_where_the_operator_set_no_token(client, settings) -> None:
    body = {"seed_set_id": make_seed_set(client), "num_instructions": 3, "push_to_hub": {"repo_id": "a/b"}}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422
    assert {
        "field": "push_to_hub",
        "message": "this service pushes to no Hub (its operator sets HUB_TOKEN_ENV)",
    } in r.json["errors"]
    for bad in (
        {"repo_id": "no-namespace"},
        {"repo_id": "a/b", "extra": 1},
        {"repo_id": "a/b", "private": "yes"},
        "a/b",
    ):
        r = client.post("/v1/jobs", json={**body, "push_to_hub": bad})
        assert r.status_code == 422 and any(e["field"].startswith("push_to_hub") for e in r.json["errors"]), (
            bad
        )
    assert client.post("/v1/previews", json={**body, "push_to_hub": {"repo_id": "a/b"}}).status_code == 422
