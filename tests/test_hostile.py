"""Hostile and bad input against the running service (gunicorn): a 4xx naming the problem every time,
the service stays up, its memory bounded; then schemathesis with all checks against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jobs.store import api_keys
from jobs.tools.local_stack import gunicorn
from tests.conftest import DATA, work

LIMIT = 1024 * 1024  # the settings fixture's MAX_REQUEST_BYTES


@pytest.fixture
def live(settings, redis, tmp_path):
    env = {
        **settings.to_env(),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "RATE_LIMIT_PER_MINUTE": "0",
        # no preview worker runs here: a preview the fuzzer makes on a real seed set waits 1 s, not 30
        "PREVIEW_WAIT_SECONDS": "1",
    }
    proc, url = gunicorn(env, tmp_path / "gunicorn.log", workers=2)
    key = api_keys.create(redis, "alpha")[1]
    yield proc, url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30), key
    proc.stop()


def upload_paper(http: httpx.Client) -> str:
    body = (DATA / "seed_tasks.jsonl").read_bytes()
    return http.post("/v1/seed-sets", content=body, headers={"Content-Type": "application/x-ndjson"}).json()[
        "id"
    ]


def rss_mib(root_pid: int) -> float:
    pids = [root_pid] + [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(root_pid)], capture_output=True, text=True, check=False
        ).stdout.split()
    ]
    total = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return total / 1024


def cases(http: httpx.Client, seed_set_id: str) -> list[tuple[str, dict, int, str]]:
    """(what, request kwargs, expected status, a word the problem must name)."""
    big = (
        b'{"id": "x", "instruction": "' + b"a" * LIMIT + b'", "instances": [{"input": "", "output": "o"}]}\n'
    )

    def chunked():
        for _ in range(20):
            yield b"x" * (LIMIT // 10)

    ndjson = {"Content-Type": "application/x-ndjson"}
    line = {"id": "a", "instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}]}
    return [
        (
            "oversized JSONL body",
            {"method": "POST", "url": "/v1/seed-sets", "content": big, "headers": ndjson},
            413,
            "Too Large",
        ),
        (
            "oversized upload",
            {"method": "POST", "url": "/v1/seed-sets", "files": {"file": ("s.jsonl", big)}},
            413,
            "Too Large",
        ),
        (
            "oversized chunked body",
            {"method": "POST", "url": "/v1/seed-sets", "content": chunked(), "headers": ndjson},
            413,
            "Too Large",
        ),
        (
            "deeply nested JSON",
            {
                "method": "POST",
                "url": "/v1/seed-sets",
                "content": b"[" * 200_000 + b"]" * 200_000,
                "headers": {"Content-Type": "application/json"},
            },
            400,
            "nested",
        ),
        (
            "invalid UTF-8 in a file",
            {
                "method": "POST",
                "url": "/v1/seed-sets",
                "content": json.dumps(line).encode() + b"\n\xff\xfe\xfa\n",
                "headers": ndjson,
            },
            422,
            "UTF-8",
        ),
        (
            "invalid UTF-8 in JSON",
            {
                "method": "POST",
                "url": "/v1/jobs",
                "content": b'{"seed_set_id": "\xff"}',
                "headers": {"Content-Type": "application/json"},
            },
            400,
            "JSON",
        ),
        (
            "duplicate task ids",
            {
                "method": "POST",
                "url": "/v1/seed-sets",
                "content": (json.dumps(line) + "\n" + json.dumps(line) + "\n").encode(),
                "headers": ndjson,
            },
            422,
            "duplicate id",
        ),
        (
            "a trillion instructions",
            {
                "method": "POST",
                "url": "/v1/jobs",
                "json": {"seed_set_id": seed_set_id, "num_instructions": 10**12},
            },
            422,
            "num_instructions",
        ),
        (
            "unknown fields",
            {
                "method": "POST",
                "url": "/v1/jobs",
                "json": {"seed_set_id": seed_set_id, "num_instructions": 2, "webhook": "http://x"},
            },
            422,
            "webhook",
        ),
        (
            "wrong content type (seed set)",
            {
                "method": "POST",
                "url": "/v1/seed-sets",
                "content": b"hello",
                "headers": {"Content-Type": "text/plain"},
            },
            415,
            "content type",
        ),
        (
            "wrong content type (job)",
            {"method": "POST", "url": "/v1/jobs", "data": {"num_instructions": "2"}},
            415,
            "content type",
        ),
        ("unknown query parameter", {"method": "GET", "url": "/v1/jobs?sort=desc"}, 422, "sort"),
    ]


def test_bad_input_is_a_named_4xx_and_the_service_stays_up(live):
    proc, _, http, _ = live
    seed_set_id = upload_paper(http)
    baseline = rss_mib(proc.pid)
    for _ in range(15):
        for what, request, status, word in cases(http, seed_set_id):
            r = http.request(**request)
            assert r.status_code == status, (what, r.status_code, r.text[:300])
            assert r.headers["content-type"] == "application/problem+json", what
            assert word.lower() in r.text.lower(), (what, r.text[:300])
    assert http.get("/healthz").status_code == 200
    grown = rss_mib(proc.pid) - baseline
    print(
        f"\nRSS of gunicorn (master + 2 workers): {baseline:.0f} MiB, +{grown:.0f} MiB after 180 bad requests"
    )
    assert grown < 60


def test_invalid_utf8_in_an_upload_names_its_line(live):
    _, _, http, _ = live
    lines = [
        json.dumps({"id": t, "instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}]}).encode()
        for t in "abcd"
    ]
    lines[2] = lines[2].replace(b"Say hi.", b"Say caf\xe9.")  # Latin-1, not UTF-8
    body = b"\n".join(lines) + b"\n"
    at = lines[2].index(b"\xe9")
    for request in (
        {"content": body, "headers": {"Content-Type": "application/x-ndjson"}},
        {"files": {"file": ("seeds.jsonl", body)}},
    ):
        r = http.post("/v1/seed-sets", **request)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        problem = r.json()
        assert [(e["line"], e["message"]) for e in problem["errors"]] == [(3, f"invalid UTF-8 at byte {at}")]


@pytest.mark.slow
def test_schemathesis_all_checks_against_gunicorn(live, client, redis, worker_env, tmp_path):
    _, url, http, key = live
    seed_set_id = upload_paper(http)
    job = http.post("/v1/jobs", json={"seed_set_id": seed_set_id, "num_instructions": 3}).json()
    # a second job for DELETE to take in the coverage and fuzzing phases (it answers 204 again after)
    victim = http.post("/v1/jobs", json={"seed_set_id": seed_set_id, "num_instructions": 2}).json()
    work(redis)
    decision = http.get(f"/v1/jobs/{job['id']}/decisions?limit=1").json()["items"][0]["id"]
    # reference sets exist only once uploaded (random bytes are no JSONL): one to read, one to delete
    ndjson = {"Content-Type": "application/x-ndjson"}
    kept, gone = (
        http.post("/v1/reference-sets", content=f'{{"text": "{text}"}}\n', headers=ndjson).json()["id"]
        for text in ("Is the sky blue?", "Name a prime.")
    )
    # a finished job for the paths no POST creates (its decisions and dataset); the stateful phase
    # follows links from what it creates itself
    real = {"job_id": job["id"], "decision_id": decision, "name": "alpaca.json"}
    params = ", ".join(f'{k} = "{v}"' for k, v in real.items())
    # A body whose validity the schema cannot state (a JSONL file; a seed set or profile that may not
    # exist) can be schema-valid and still refused: positive_data_acceptance is off for those, and
    # so is the warning that POST /v1/jobs mostly refuses schema-valid bodies (random profile names).
    # The job above must outlive the coverage and fuzzing phases: DELETE /v1/jobs/{job_id} does not
    # take ids from earlier responses there but deletes the second job (the stateful phase still
    # deletes jobs it creates).
    config = tmp_path / "schemathesis.toml"
    # A body over MAX_REQUEST_BYTES is refused with 413, which schemathesis does not count among the
    # ways to reject invalid data: add it. A job deleted (by the fuzzer or its retention period) answers
    # 410 to schema-valid requests, as a missing one answers 404: add that to schemathesis' defaults.
    config.write_text(
        f"""
# schemathesis' default warnings but validation_mismatch: POST /v1/jobs mostly refuses schema-valid
# bodies (random profile names; num_instructions or instructions, one of them), and the per-operation
# setting of this list is not applied in every phase
warnings.display = [
    "missing_auth", "missing_test_data", "base_url_mismatch", "missing_deserializer", "unused_openapi_auth",
    "unsupported_regex", "method_not_allowed", "constants_extraction", "unmatched_filter",
    "unresolvable_reference", "rate_limited", "dictionary_mismatch", "timeout_units",
]

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 410, 413, 414, 415, 422, 428, 429, "5XX"]

[checks.positive_data_acceptance]
expected-statuses = ["2XX", "3XX", 401, 403, 404, 409, 410, 429, "5XX"]

[[operations]]
include-path-regex = "^/v1/jobs/\\\\{{job_id\\\\}}/(decisions|dataset|events)"
parameters = {{ {params} }}

[[operations]]
include-name = "DELETE /v1/jobs/{{job_id}}"
parameters = {{ job_id = "{victim["id"]}" }}
phases.coverage.extra-data-sources.responses = false
phases.fuzzing.extra-data-sources.responses = false

[[operations]]
include-name = "POST /v1/seed-sets"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-name = "POST /v1/reference-sets"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-name = "GET /v1/reference-sets/{{reference_set_id}}"
parameters = {{ reference_set_id = "{kept}" }}

[[operations]]
include-name = "DELETE /v1/reference-sets/{{reference_set_id}}"
parameters = {{ reference_set_id = "{gone}" }}
phases.coverage.extra-data-sources.responses = false
phases.fuzzing.extra-data-sources.responses = false

[[operations]]
include-name = "POST /v1/previews"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-name = "POST /v1/jobs"
checks.positive_data_acceptance.enabled = false

# valid only above the job's own target, which the schema cannot say
[[operations]]
include-name = "POST /v1/jobs/{{job_id}}/extensions"
checks.positive_data_acceptance.enabled = false
"""
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "-H",
            f"Authorization: Bearer {key}",
            "--max-examples",
            "30",
            "--seed",
            "1",
            "--no-color",
            # one worker: CPython 3.11's ast.parse is not thread-safe ("AST constructor recursion depth
            # mismatch" when hypothesis describes lambdas in two threads at once)
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = result.stdout + result.stderr
    (tmp_path / "schemathesis.out").write_text(out)
    assert result.returncode == 0, out[-6000:]
    assert "No issues found" in out
    generated = re.search(r"Test cases:\s+(\d+) generated", out)
    assert generated, out[-2000:]
    print(f"\nschemathesis against gunicorn, all checks: {generated.group(1)} generated cases")
    assert int(generated.group(1)) >= 1000, out[-2000:]
