"""Webhooks when a job ends, with real parts: gunicorn or the app, RQ worker processes, Redis, the S3
endpoint and a receiver on 127.0.0.1 started here (allowed by its exact address in these tests).

What a delivery carries and how it is signed (Standard Webhooks, checked against the spec's own test
vector); once per final state; retried on 5xx, 408, 429 and connection errors within
WEBHOOK_RETRY_SECONDS and recorded as events; final on a redirect or another 4xx; refused for hosts off
the allowlist at submit and, at delivery, for a name that leads into the cluster; the CLI's check."""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq.job import Job as RQJob

from client.__main__ import main as cli
from client.webhooks import InvalidWebhook, verify
from jobs import webhooks
from jobs.blobs.artifacts import Artifacts
from jobs.runner import delivery, queue
from jobs.settings import Settings, get_settings
from jobs.store import api_keys, keyspace
from jobs.store import webhooks as records
from jobs.tools.local_model import free_port
from jobs.tools.local_stack import gunicorn
from service.app import create_app
from tests.conftest import env_for, work
from tests.test_api import SEEDS, make_seed_set
from tests.test_faults import wait_until

# --- a receiver ---


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    seen: Any = None  # what the receiver's hook found when the request came

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread: each request gets the next scripted answer (a status, or
    a status and headers; 200 once the script is done) and is recorded."""

    def __init__(
        self,
        answers: Sequence[int | tuple[int, dict[str, str]]] = (),
        port: int = 0,
        hook: Callable[[bytes], Any] | None = None,
        tls: tuple[Path, Path] | None = None,
    ):
        self.answers, self.received, self.hook = list(answers), [], hook
        self.server_names: list[str | None] = []  # TLS: the names clients asked for (SNI)
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = receiver.hook(body) if receiver.hook else None
                with lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, seen)
                    )
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                status, extra = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in {**extra, "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls:  # a certificate and its key
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the service, with 127.0.0.1 allowed ---


@dataclass
class Hooks:
    settings: Settings
    redis: Any
    alpha: Any  # the app's test client, as team alpha
    secret: str
    seed_set: str
    start_worker: Callable[[], Any]
    workers: list = field(default_factory=list)

    def submit(self, notify_url: str, **body: Any) -> str:
        r = self.alpha.post(
            "/v1/jobs",
            json={"seed_set_id": self.seed_set, "num_instructions": 3, "notify_url": notify_url, **body},
        )
        assert r.status_code == 202, r.json
        return r.json["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.alpha.get(f"/v1/jobs/{job_id}").json

    def settled(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """The job once it has ended and its webhook is delivered or given up."""
        return wait_until(
            lambda: (j := self.job(job_id))["deliveries"] and not j["deliveries"][0]["pending"] and j,
            timeout=timeout,
            what="the webhook to be delivered or given up",
        )

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's webhook events' data, oldest first."""
        page = self.alpha.get(f"/v1/jobs/{job_id}/events?limit=1000").json["items"]
        return [e["data"] for e in page if e["type"] == "webhook"]


@pytest.fixture
def hooks(settings, redis, spawn, monkeypatch) -> Iterator[Callable[..., Hooks]]:
    """make(worker=True, **settings): the app and (optionally at once) a worker process, with 127.0.0.1
    allowed, WEBHOOK_TIMEOUT_SECONDS 2 and WEBHOOK_RETRY_SECONDS 6 unless given; team alpha has a secret.
    The environment holds the same settings, for RQ jobs run in this process (conftest.work)."""

    def make(worker: bool = True, **overrides: Any) -> Hooks:
        options = {
            "webhook_allowed_hosts": ("127.0.0.1",),
            "webhook_timeout_seconds": 2.0,
            "webhook_retry_seconds": 6.0,
            **overrides,
        }
        local = replace(settings, **options)
        for name, value in local.to_env().items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        alpha = create_app(local, configure_logging=False).test_client()
        alpha.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_keys.create(redis, 'alpha')[1]}"
        created = alpha.post("/v1/webhook-secret")
        assert created.status_code == 201, created.json
        hooks = Hooks(local, redis, alpha, created.json["secret"], make_seed_set(alpha), lambda: None)
        hooks.start_worker = lambda: hooks.workers.append(spawn(local, f"worker{len(hooks.workers)}"))
        if worker:
            hooks.start_worker()
        return hooks

    yield make
    get_settings.cache_clear()


def headers_file(tmp_path: Path, received: Received) -> Path:
    path = tmp_path / "headers.txt"
    path.write_text("POST /hook HTTP/1.1\n" + "".join(f"{k}: {v}\n" for k, v in received.headers.items()))
    return path


# --- the whole way, through gunicorn ---


def make_seed_set_http(http: httpx.Client) -> str:
    r = http.post("/v1/seed-sets", content=SEEDS, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def test_a_job_posts_its_end_once_signed_with_its_teams_secret(settings, redis, spawn, tmp_path, capsys):
    local = replace(settings, webhook_allowed_hosts=("127.0.0.1",), webhook_timeout_seconds=2.0)
    api, url = gunicorn(env_for(local), tmp_path / "gunicorn.log")
    key = api_keys.create(redis, "alpha")[1]
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
    beta = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {api_keys.create(redis, 'beta')[1]}"}
    )
    try:
        with Receiver() as receiver:
            body = {"seed_set_id": make_seed_set_http(http), "num_instructions": 5}
            hook = f"{receiver.url}/hook?ci=17"
            # no secret yet: refused, naming the field and what to do
            r = http.post("/v1/jobs", json={**body, "notify_url": hook})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "notify_url"
            assert "POST /v1/webhook-secret" in r.json()["errors"][0]["message"]
            created = http.post("/v1/webhook-secret")
            assert created.status_code == 201 and created.json()["previous_valid_until"] is None
            secret = created.json()["secret"]
            beta_secret = beta.post("/v1/webhook-secret").json()["secret"]
            assert secret.startswith("whsec_") and secret != beta_secret
            job_id = http.post("/v1/jobs", json={**body, "notify_url": hook}).json()["id"]
            spawn(local, "worker")
            job = wait_until(
                lambda: (
                    (j := http.get(f"/v1/jobs/{job_id}").json())["deliveries"]
                    and not j["deliveries"][0]["pending"]
                    and j
                ),
                what="the webhook",
            )
            assert job["state"] == "succeeded" and job["notify_url"] == hook
            [delivery] = job["deliveries"]
            assert delivery == {
                "event": "job.succeeded",
                "attempts": 1,
                "last_status": 200,
                "last_error": None,
                "delivered": True,
                "pending": False,
                "last_attempt_at": delivery["last_attempt_at"],
            }
            # once per final state, whichever code path asks again
            assert not queue.notify(redis, job_id, local)
            assert queue.queue(redis, local).count == 0
            [got] = receiver.received
            assert got.path == "/hook?ci=17" and got.headers["host"] == f"127.0.0.1:{receiver.port}"
            assert got.headers["content-type"] == "application/json"
            event = verify(secret, got.headers, got.body)
            with pytest.raises(InvalidWebhook, match="no signature matches"):
                verify(beta_secret, got.headers, got.body)
            assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
            assert event == {
                "id": f"msg_{job_id}_succeeded",
                "type": "job.succeeded",
                "timestamp": event["timestamp"],
                "data": {
                    "job_id": job_id,
                    "state": "succeeded",
                    "instructions_kept": job["progress"]["instructions_kept"],
                    "instances_kept": job["progress"]["instances_kept"],
                    "stop_reason": None,
                    "error": None,
                    "dataset_url": f"/v1/jobs/{job_id}/dataset",
                },
            }
            assert got.headers["webhook-id"] == event["id"] and event["timestamp"].endswith("Z")
            # the counts are the dataset's (and differ here, so that one cannot pass for the other)
            files = {f["name"]: f["records"] for f in http.get(event["data"]["dataset_url"]).json()["files"]}
            assert event["data"]["instructions_kept"] == files["instructions.jsonl"] == 5
            assert event["data"]["instances_kept"] == files["finetune.jsonl"] != 5
            [attempt] = [
                e["data"]
                for e in http.get(f"/v1/jobs/{job_id}/events").json()["items"]
                if e["type"] == "webhook"
            ]
            assert attempt == {
                "event": "job.succeeded",
                "attempt": 1,
                "status": 200,
                "error": None,
                "delivered": True,
                "final": True,
                "next_attempt_in": None,
            }
        # the command line's check, on the delivery as received
        (tmp_path / "body.json").write_bytes(got.body)
        capsys.readouterr()
        given = ["--headers", str(headers_file(tmp_path, got)), "--body", str(tmp_path / "body.json")]
        assert cli(["verify-webhook", "--secret", secret, *given]) == 0
        assert capsys.readouterr().out.strip() == f"valid: job.succeeded msg_{job_id}_succeeded"
        assert cli(["verify-webhook", "--secret", beta_secret, *given]) == 1
        assert "invalid: no signature matches" in capsys.readouterr().out
        parts = ["--id", got.headers["webhook-id"], "--timestamp", got.headers["webhook-timestamp"]]
        parts += ["--signature", got.headers["webhook-signature"], "--body", str(tmp_path / "body.json")]
        assert cli(["verify-webhook", "--secret", secret, *parts]) == 0
        (tmp_path / "body.json").write_bytes(got.body.replace(b'"succeeded"', b'"failed"', 1))
        assert cli(["verify-webhook", "--secret", secret, *given]) == 1
        # `selfinstruct submit --notify-url` passes the URL on (here one the service refuses: no job)
        capsys.readouterr()
        seeds = str(Path(__file__).resolve().parent.parent / "data" / "seed_tasks.jsonl")
        submit = ["--url", url, "--api-key", key, "submit", seeds, "--instructions", "2"]
        assert cli([*submit, "--notify-url", "http://evil.example.org/hook"]) == 2
        assert "notify_url: host evil.example.org is not on" in capsys.readouterr().err
    finally:
        http.close()
        beta.close()
        api.stop()


def test_verify_webhook_refuses_an_old_timestamp_unless_told(tmp_path, capsys):
    secret = webhooks.new_secret()
    body = b'{"id":"msg_x","type":"job.succeeded"}'
    (tmp_path / "body.json").write_bytes(body)
    old = int(time.time()) - 400
    args = ["verify-webhook", "--secret", secret, "--id", "msg_x", "--timestamp", str(old)]
    args += [
        "--signature",
        webhooks.signature(secret, "msg_x", old, body),
        "--body",
        str(tmp_path / "body.json"),
    ]
    assert cli(args) == 1
    assert re.search(
        r"invalid: the timestamp is 40[01] s old, beyond the 300 s tolerance", capsys.readouterr().out
    )
    assert cli([*args, "--tolerance", "500"]) == 0
    assert cli([*args, "--tolerance", "0"]) == 0
    assert cli([*args[:5], "--body", str(tmp_path / "body.json")]) == 2  # --id without the rest


# --- retries, give-ups and final answers ---


@pytest.mark.slow
def test_500_429_and_408_are_retried_with_backoff_each_attempt_an_event(hooks):
    h = hooks(webhook_retry_seconds=12.0)
    with Receiver([500, 429, 408]) as receiver:
        job_id = h.submit(f"{receiver.url}/hook")
        job = h.settled(job_id)
    assert job["state"] == "succeeded"
    assert job["deliveries"][0] | {"last_attempt_at": None} == {
        "event": "job.succeeded",
        "attempts": 4,
        "last_status": 200,
        "last_error": None,
        "delivered": True,
        "pending": False,
        "last_attempt_at": None,
    }
    attempts = h.attempts(job_id)
    assert [(a["attempt"], a["status"], a["delivered"], a["final"]) for a in attempts] == [
        (1, 500, False, False),
        (2, 429, False, False),
        (3, 408, False, False),
        (4, 200, True, True),
    ]
    assert [a["next_attempt_in"] for a in attempts] == [1.0, 2.0, 4.0, None]  # exponential backoff
    # the same event every time, each attempt signed afresh
    assert len({r.body for r in receiver.received}) == 1 and len(receiver.received) == 4
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    for got in receiver.received:
        verify(h.secret, got.headers, got.body)


def test_a_receiver_that_comes_up_within_the_window_gets_the_event(hooks):
    h = hooks(webhook_retry_seconds=15.0)
    port = free_port()
    job_id = h.submit(f"http://127.0.0.1:{port}/hook")
    first = wait_until(lambda: h.attempts(job_id), what="a first attempt")[0]
    assert first["status"] is None and "ConnectError" in first["error"] and not first["final"]
    assert h.job(job_id)["deliveries"][0]["pending"]
    with Receiver(port=port) as receiver:
        job = h.settled(job_id)
    [delivery] = job["deliveries"]
    assert delivery["delivered"] and delivery["attempts"] >= 2 and delivery["last_status"] == 200
    [got] = receiver.received
    assert verify(h.secret, got.headers, got.body)["type"] == "job.succeeded"
    attempts = h.attempts(job_id)
    assert [a["delivered"] for a in attempts] == [False] * (len(attempts) - 1) + [True]


def test_a_receiver_down_longer_than_the_window_is_given_up_and_the_job_is_unaffected(hooks):
    h = hooks(webhook_retry_seconds=3.0)
    port = free_port()
    job_id = h.submit(f"http://127.0.0.1:{port}/hook")
    wait_until(lambda: h.attempts(job_id), what="a first attempt")
    # the job is over, but its events are not done while an attempt is still to come
    assert h.job(job_id)["state"] == "succeeded"
    assert h.alpha.get(f"/v1/jobs/{job_id}/events?limit=1000").json["done"] is False
    job = h.settled(job_id)
    [delivery] = job["deliveries"]
    assert job["state"] == "succeeded" and job["error"] is None and job["dataset_available"]
    assert (
        not delivery["delivered"] and delivery["attempts"] >= 3 and "ConnectError" in delivery["last_error"]
    )
    attempts = h.attempts(job_id)
    assert [a["final"] for a in attempts] == [False] * (len(attempts) - 1) + [True]
    events = h.alpha.get(f"/v1/jobs/{job_id}/events?limit=1000").json
    assert events["done"] is True and events["items"][-1]["type"] == "webhook"
    # within WEBHOOK_RETRY_SECONDS: the planned waits fit in the window, and the last attempt came when
    # it had run out (not before; how late a loaded machine runs it is not the code's to promise)
    planned = [a["next_attempt_in"] for a in attempts if not a["final"]]
    assert all(w > 0 for w in planned) and sum(planned) <= 3.0, planned
    times = [e["at"] for e in events["items"] if e["type"] == "webhook"]
    assert times == sorted(times) and times[-1] - times[0] >= 2.5, times
    assert RQJob.fetch(f"{job_id}-webhook-succeeded", connection=h.redis).get_status() == "finished"
    assert queue.queue(h.redis, h.settings).count == 0  # nothing more to come


def test_a_stopping_worker_hands_its_delivery_back_and_another_goes_on_with_its_count(hooks):
    h = hooks(webhook_retry_seconds=30.0)
    port = free_port()
    job_id = h.submit(f"http://127.0.0.1:{port}/hook")
    wait_until(lambda: h.attempts(job_id), what="a first attempt")
    [first] = h.workers
    first.signal(signal.SIGTERM)  # what Kubernetes sends: the delivery waits for its next attempt
    first.proc.wait(30)
    assert "jobs.runner.delivery.Preempted" in first.log.read_text()  # handed back, not lost
    with Receiver(port=port) as receiver:
        h.start_worker()
        job = h.settled(job_id)
    attempts = h.attempts(job_id)
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert job["deliveries"][0]["delivered"] and job["deliveries"][0]["attempts"] == len(attempts)
    assert len(receiver.received) == 1


def test_a_redirect_or_a_4xx_ends_the_delivery_and_a_redirect_is_not_followed(hooks):
    h = hooks()
    with Receiver() as target, Receiver([(302, {"Location": f"{target.url}/stolen"})]) as redirecting:
        moved = h.submit(f"{redirecting.url}/hook")
        with Receiver([404]) as missing:
            gone = h.submit(f"{missing.url}/hook")
            refused = h.settled(gone)
        redirected = h.settled(moved)
        assert target.received == [] and len(redirecting.received) == 1 and len(missing.received) == 1
    assert redirected["deliveries"][0] | {"last_attempt_at": None} == {
        "event": "job.succeeded",
        "attempts": 1,
        "last_status": 302,
        "last_error": "a redirect; redirects are not followed",
        "delivered": False,
        "pending": False,
        "last_attempt_at": None,
    }
    assert refused["deliveries"][0]["attempts"] == 1 and refused["deliveries"][0]["last_status"] == 404
    assert [a["final"] for a in h.attempts(gone)] == [True]


@pytest.mark.slow
def test_every_final_state_is_posted_a_canceled_running_job_after_its_partial_dataset(hooks, fake_llm):
    h = hooks(worker=False)
    artifacts = Artifacts(h.settings)

    def manifest_at_receipt(body: bytes) -> Any:
        found = artifacts.manifest("alpha", json.loads(body)["data"]["job_id"])
        return found and found["partial"]

    with Receiver(hook=manifest_at_receipt) as receiver:
        queued = h.submit(f"{receiver.url}/queued")
        assert h.alpha.post(f"/v1/jobs/{queued}/cancel").json["state"] == "canceled"  # never started
        h.start_worker()
        assert h.settled(queued)["deliveries"][0]["delivered"]
        fake_llm.script.fault_rate, fake_llm.script.faults = 1.0, ("500",)
        failed = h.settled(h.submit(f"{receiver.url}/failed"))
        # a second worker: a delivery queued before the partial dataset was made would run at once
        h.start_worker()
        fake_llm.script.fault_rate, fake_llm.script.delay = 0.0, 0.2
        running = h.submit(f"{receiver.url}/running", num_instructions=40)
        wait_until(lambda: h.job(running)["progress"]["requests"] >= 3, what="the job to be running")
        assert h.alpha.post(f"/v1/jobs/{running}/cancel").status_code == 202
        stopped = h.settled(running)
        by_path = {r.path.strip("/"): r for r in receiver.received}
    assert sorted(by_path) == ["failed", "queued", "running"] and len(receiver.received) == 3
    events = {name: verify(h.secret, got.headers, got.body) for name, got in by_path.items()}
    assert events["queued"]["type"] == "job.canceled"
    assert events["queued"]["data"] | {"job_id": None} == {
        "job_id": None,
        "state": "canceled",
        "instructions_kept": 0,
        "instances_kept": 0,
        "stop_reason": None,
        "error": None,
        "dataset_url": None,
    }
    assert failed["state"] == "failed" and events["failed"]["type"] == "job.failed"
    assert events["failed"]["data"]["error"] == failed["error"] and "500" in failed["error"]
    assert events["failed"]["data"]["dataset_url"] is None
    assert stopped["state"] == "canceled" and events["running"]["type"] == "job.canceled"
    assert events["running"]["data"]["dataset_url"] == f"/v1/jobs/{running}/dataset"
    assert by_path["running"].seen is True  # the partial dataset's manifest was there when it arrived
    assert events["running"]["data"]["instructions_kept"] == stopped["progress"]["instructions_kept"]


def test_a_deleted_job_stops_its_delivery_and_leaves_nothing_behind(hooks):
    h = hooks(webhook_retry_seconds=20.0)
    job_id = h.submit(f"http://127.0.0.1:{free_port()}/hook")
    wait_until(lambda: h.attempts(job_id), what="a first attempt")
    assert h.alpha.delete(f"/v1/jobs/{job_id}").status_code == 204
    delivery = RQJob.fetch(f"{job_id}-webhook-succeeded", connection=h.redis)
    wait_until(lambda: delivery.get_status(refresh=True) == "finished", what="the delivery to stop")
    assert not h.redis.exists(keyspace.job(job_id)) and not h.redis.exists(keyspace.job_events(job_id))
    assert h.alpha.get(f"/v1/jobs/{job_id}").status_code == 410


# --- what is refused ---


def test_notify_urls_off_the_allowlist_or_malformed_are_refused_at_submit_and_no_job_is_made(hooks, redis):
    h = hooks(worker=False, webhook_allowed_hosts=("127.0.0.1", "*.hooks.example.com"))
    body = {"seed_set_id": h.seed_set, "num_instructions": 2}
    refused = {
        "http://evil.example.org/hook": "not on this service's list of allowed webhook hosts",
        "http://hooks.example.com/hook": "not on this service's list",  # a pattern names subdomains only
        "http://a.hooks.example.com.evil.org/": "not on this service's list",
        "ftp://127.0.0.1/hook": "only http and https",
        "http://user:secret@127.0.0.1/hook": "credentials in the URL",
        "http://127.0.0.1@evil.example.org/": "credentials in the URL",
        "http://127.0.0.1:99999/hook": "not a valid URL",
        "http:///hook": "names no host",
        "http://127.0.0.1/a b": "no spaces",
        "http://127.0.0.1/" + "a" * 2100: "Length",
    }
    for url, message in refused.items():
        r = h.alpha.post("/v1/jobs", json={**body, "notify_url": url})
        assert r.status_code == 422, (url, r.json)
        assert [e["field"] for e in r.json["errors"]] == ["notify_url"] and message in r.json["detail"], (
            r.json
        )
    assert h.alpha.post("/v1/jobs", json={**body, "notify_url": 7}).status_code == 422
    assert h.alpha.get("/v1/jobs").json["items"] == [] and not redis.exists(keyspace.team_jobs("alpha"))
    # a preview sends nothing: it takes no notify_url
    preview = h.alpha.post("/v1/previews?wait=0", json={**body, "notify_url": "http://127.0.0.1/hook"})
    assert preview.status_code == 422 and preview.json["errors"][0]["field"] == "notify_url"
    # allowed: an exact host, and a name under a pattern (its addresses are checked when it is sent)
    for url in ("http://127.0.0.1:8080/hook", "https://ci.hooks.example.com/hook?x=1"):
        assert h.alpha.post("/v1/jobs", json={**body, "notify_url": url}).status_code == 202
    # no allowlist: no webhooks at all
    closed = create_app(replace(h.settings, webhook_allowed_hosts=()), configure_logging=False).test_client()
    closed.environ_base.update(h.alpha.environ_base)
    r = closed.post("/v1/jobs", json={**body, "notify_url": "http://127.0.0.1/hook"})
    assert r.status_code == 422 and "webhooks are not enabled on this service" in r.json["detail"]


def test_a_name_that_resolves_into_the_cluster_is_refused_at_delivery_unless_allowed_by_name(
    hooks, redis, monkeypatch
):
    """The worker runs in this process (conftest.work) so that the name can resolve to loopback here."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "ci.hooks.test":
            asked.append(host)
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with Receiver() as receiver:
        url = f"http://ci.hooks.test:{receiver.port}/hook"
        h = hooks(worker=False, webhook_allowed_hosts=("*.hooks.test",))
        job_id = h.submit(url)
        work(redis)
        [delivery] = h.job(job_id)["deliveries"]
        assert receiver.received == [] and not delivery["delivered"] and not delivery["pending"]
        assert delivery["attempts"] == 1 and "ci.hooks.test resolves to 127.0.0.1" in delivery["last_error"]
        # allowed by its exact name: the operator vouches for it; the request goes to the address that
        # was checked, with the name as Host, and the name is resolved once
        h = hooks(worker=False, webhook_allowed_hosts=("ci.hooks.test",))
        asked.clear()
        job_id = h.submit(url)
        work(redis)
        assert h.job(job_id)["deliveries"][0]["delivered"] and asked == ["ci.hooks.test"]
        [got] = receiver.received
        assert got.headers["host"] == f"ci.hooks.test:{receiver.port}"
        verify(h.secret, got.headers, got.body)
        # the allowlist at delivery is the one that counts: a host dropped since the submit is refused
        job_id = h.submit(url)
        monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "other.example.com")
        get_settings.cache_clear()
        work(redis)
        assert "not on this service's list" in h.job(job_id)["deliveries"][0]["last_error"]
        assert len(receiver.received) == 1


def test_https_goes_to_the_checked_address_and_the_certificate_must_name_the_host(
    hooks, redis, monkeypatch, tmp_path
):
    """TLS with the address pinned: the host's name is sent (SNI) and the certificate checked against
    it, not against the address connected to. The worker runs here, trusting the test's certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ci.hooks.test"
    command += " -addext subjectAltName=DNS:ci.hooks.test"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )
    monkeypatch.setattr(delivery, "TLS_VERIFY", ssl.create_default_context(cafile=str(cert)))
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host.endswith(".hooks.test") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with Receiver(tls=(cert, key)) as receiver:
        h = hooks(worker=False, webhook_allowed_hosts=("ci.hooks.test", "other.hooks.test"))
        good = h.submit(f"https://ci.hooks.test:{receiver.port}/hook")
        work(redis)
        assert h.job(good)["deliveries"][0]["delivered"]
        [got] = receiver.received
        assert got.headers["host"] == f"ci.hooks.test:{receiver.port}" and receiver.server_names == [
            "ci.hooks.test"
        ]
        verify(h.secret, got.headers, got.body)
        # the same server under a name its certificate does not hold: refused by the client
        monkeypatch.setenv("WEBHOOK_RETRY_SECONDS", "1")
        get_settings.cache_clear()
        wrong = h.submit(f"https://other.hooks.test:{receiver.port}/hook")
        work(redis)
        [delivery_] = h.job(wrong)["deliveries"]
        assert not delivery_["delivered"] and "CERTIFICATE_VERIFY_FAILED" in delivery_["last_error"]
        assert len(receiver.received) == 1


# --- the pieces ---


def test_signatures_match_the_standard_webhooks_test_vector():
    secret, msg_id, stamp, body = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert webhooks.signature(secret, msg_id, stamp, body) == expected
    signed = {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(stamp),
        "Webhook-Signature": f"v1,bm9wZQ== {expected}",
    }
    assert verify(secret, signed, body, now=stamp + 299) == {"test": 2432232314}
    assert verify(secret.removeprefix("whsec_"), signed, body, now=stamp) == {"test": 2432232314}
    for headers, given, now, why in [
        (signed, body + b" ", stamp, "no signature matches"),
        (signed, body, stamp + 301, "s old"),
        (signed, body, stamp - 301, "in the future"),
        (
            {**signed, "Webhook-Signature": expected.replace("v1,", "v2,")},
            body,
            stamp,
            "no signature matches",
        ),
        ({k: v for k, v in signed.items() if k != "Webhook-Id"}, body, stamp, "missing header webhook-id"),
        ({**signed, "Webhook-Timestamp": "1614265330.5"}, body, stamp, "not a whole number"),
    ]:
        with pytest.raises(InvalidWebhook, match=why):
            verify(secret, headers, given, now=now)
    with pytest.raises(InvalidWebhook, match="no signature matches"):
        verify(webhooks.new_secret(), signed, body, now=stamp)


def test_a_rotated_secret_signs_beside_the_new_one_for_the_overlap(redis):
    first = records.rotate(redis, "alpha", webhooks.new_secret())
    assert first.previous_until is None and records.signing_secrets(redis, "alpha") == [first.secret]
    second = records.rotate(redis, "alpha", webhooks.new_secret())
    assert second.previous_until == pytest.approx(second.created_at + records.ROTATION_OVERLAP_SECONDS)
    assert records.signing_secrets(redis, "alpha") == [second.secret, first.secret]
    assert records.signing_secrets(redis, "alpha", now=second.previous_until + 1) == [second.secret]
    body = b'{"id": "msg_1"}'
    signed = webhooks.headers(records.signing_secrets(redis, "alpha"), "msg_1", int(time.time()), body)
    assert verify(first.secret, signed, body) == verify(second.secret, signed, body) == {"id": "msg_1"}
    assert records.signing_secrets(redis, "beta") == []
    # only the current secret is kept after another rotation
    third = records.rotate(redis, "alpha", webhooks.new_secret())
    assert records.signing_secrets(redis, "alpha") == [third.secret, second.secret]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("10.0.0.5", False),
        ("172.16.3.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),  # the cloud's metadata service
        ("100.64.0.1", False),  # shared address space (some clusters' pods)
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("239.255.255.250", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.216.34", True),
        ("2002:0a00:0001::1", False),  # 6to4 around 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 around 169.254.169.254
    ],
)
def test_only_public_addresses_pass(address, public):
    import ipaddress

    assert webhooks.public(ipaddress.ip_address(address)) is public


def test_the_address_check_resolves_once_and_refuses_any_private_answer(monkeypatch):
    answers: dict[str, list[str]] = {
        "public.hooks.test": ["93.184.216.34"],
        "inside.hooks.test": ["10.1.2.3"],
        "both.hooks.test": ["93.184.216.34", "127.0.0.1"],  # one bad answer spoils it
        "v6.hooks.test": ["fd12::5"],
    }

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    allowed = ("*.hooks.test", "inside.hooks.test")
    parse = webhooks.parse
    assert str(webhooks.resolve(parse("https://public.hooks.test/x", allowed), allowed)) == "93.184.216.34"
    assert (
        str(webhooks.resolve(parse("http://inside.hooks.test/x", allowed), allowed)) == "10.1.2.3"
    )  # by name
    for host in ("both", "v6"):
        with pytest.raises(webhooks.Refused, match="private, loopback"):
            webhooks.resolve(parse(f"http://{host}.hooks.test/x", allowed), allowed)
    # an address in the URL: allowed by its exact entry only, like a name
    assert str(webhooks.resolve(parse("http://10.0.0.7/x", ("10.0.0.7",)), ("10.0.0.7",))) == "10.0.0.7"
    with pytest.raises(webhooks.Refused, match=r"resolves to 10\.0\.0\.7"):
        webhooks.resolve(parse("http://10.0.0.7/x", ("10.0.0.7",)), ("*.hooks.test",))


def test_the_allowlist_setting_is_checked_when_the_settings_load():
    assert Settings.from_env(
        {"WEBHOOK_ALLOWED_HOSTS": " CI.example.com, *.hooks.example.com ,"}
    ).webhook_allowed_hosts == (
        "ci.example.com",
        "*.hooks.example.com",
    )
    for bad in ("*", "https://ci.example.com", "ci.example.com:8080", "*.*.example.com"):
        with pytest.raises(ValueError, match="WEBHOOK_ALLOWED_HOSTS"):
            Settings.from_env({"WEBHOOK_ALLOWED_HOSTS": bad})
