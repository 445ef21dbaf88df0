"""Strict input through the running service (gunicorn): JSON types taken as they are, query integers
parsed exactly, control characters refused in every upload form, every fault of a request in one
answer, and long request lines answered as problems."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobs.store import api_keys
from jobs.tools.local_stack import gunicorn
from tests.conftest import DATA

PROBLEM = "application/problem+json"
SEEDS = (DATA / "seed_tasks.jsonl").read_bytes()
NDJSON = {"Content-Type": "application/x-ndjson"}
GOOD_TASK = {"id": "t1", "instruction": "Say hello.", "instances": [{"input": "", "output": "Hello."}]}
EXACT_INTEGER = re.compile(r"-?[0-9]+")
EXAMPLES = hsettings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@pytest.fixture
def live(settings, redis, tmp_path) -> Iterator[tuple[str, httpx.Client, str]]:
    """gunicorn on the real Redis and S3; (url, a client with team alpha's key, a seed set id)."""
    env = {
        **settings.to_env(),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "RATE_LIMIT_PER_MINUTE": "0",
    }
    proc, url = gunicorn(env, tmp_path / "gunicorn.log", workers=2)
    key = api_keys.create(redis, "alpha")[1]
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    seed_set = http.post("/v1/seed-sets", content=SEEDS, headers=NDJSON)
    assert seed_set.status_code in (200, 201), seed_set.text
    yield url, http, seed_set.json()["id"]
    http.close()
    proc.stop()
    log = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"] == PROBLEM, r.headers["content-type"]
    return r.json()


def faults(r: httpx.Response) -> set[tuple[int | None, str]]:
    """(line, field) of every error of a 422 problem."""
    return {(e.get("line"), e["field"]) for e in problem(r, 422)["errors"]}


# --- the spec's typed fields, and wrong JSON for each ---


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def typed_fields(spec: dict, schema: dict, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """(path, type) of every integer, number and boolean field, nested objects and lists included;
    a list's items are reached through index 0. A nullable one's type is "<type>?" (null is right)."""
    schema = resolve(spec, schema)
    if schema.get("type") in ("integer", "number", "boolean"):
        yield path, schema["type"] + ("?" if schema.get("nullable") else "")
    for name, sub in schema.get("properties", {}).items():
        yield from typed_fields(spec, sub, (*path, name))
    if "items" in schema:
        yield from typed_fields(spec, schema["items"], (*path, 0))


def dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def with_value(body: Any, path: tuple, value: Any) -> Any:
    """A copy of `body` with `value` at `path` (creating the objects on the way)."""
    body = json.loads(json.dumps(body))
    node = body
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[path[-1]] = value
    return body


JSON_SCALARS = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
WRONG = {
    "integer": st.one_of(
        JSON_SCALARS,
        st.booleans(),
        st.floats(allow_nan=False, allow_infinity=False),  # 5.0 included: a float is not an integer
        st.integers(-100, 100).map(str),
    ),
    "number": st.one_of(JSON_SCALARS, st.booleans(), st.floats(0, 1).map(str)),
    "boolean": st.one_of(
        JSON_SCALARS,
        st.integers(),
        st.floats(allow_nan=False),
        st.sampled_from(["true", "false", "yes", "1"]),
    ),
}
WRONG |= {f"{kind}?": wrong.filter(lambda v: v is not None) for kind, wrong in WRONG.items()}


def operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                yield method, path, op


def json_operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    for method, path, op in operations(spec):
        content = op.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            yield method, path, content["application/json"]["schema"]


def wrong_json_is_refused(
    http: httpx.Client, method: str, path: str, base: dict, field: tuple, values: st.SearchStrategy
) -> None:
    @given(value=values)
    @EXAMPLES
    def refused(value: Any) -> None:
        r = http.request(method, path, json=with_value(base, field, value))
        assert (None, dotted(field)) in faults(r), (field, value, r.text[:400])

    refused()


@pytest.mark.slow
def test_wrong_json_types_are_refused_naming_the_field(live, redis):
    """Every integer, number and boolean field of every JSON body, given a value of another JSON type
    (a string, a float for an integer, a boolean for a number, ...): 422 naming that field, nothing made."""
    _, http, seed_set_id = live
    spec = http.get("/openapi.json").json()
    valid = {
        ("post", "/v1/jobs"): {"seed_set_id": seed_set_id, "num_instructions": 2},
        ("post", "/v1/seed-sets"): {"name": "x", "tasks": [GOOD_TASK]},
        ("post", "/v1/previews"): {"seed_set_id": seed_set_id, "num_instructions": 2},
        # the body is checked before the job is looked up: the path's placeholder will do
        ("post", "/v1/jobs/{job_id}/extensions"): {"num_instructions": 5},
    }
    checked: list[str] = []
    for method, path, schema in json_operations(spec):
        assert (method, path) in valid, f"no valid body known for {method} {path}: add one here"
        base = valid[(method, path)]
        for field, kind in typed_fields(spec, schema):
            wrong_json_is_refused(http, method, path, base, field, WRONG[kind])
            checked.append(f"{method} {path} {dotted(field)}")
    # the fields this covers today; a new typed field is covered without being listed here
    assert {
        "post /v1/jobs num_instructions",
        "post /v1/jobs seed",
        "post /v1/jobs similarity_threshold",
        "post /v1/jobs contamination_ngram",
        "post /v1/jobs contamination_threshold",
        "post /v1/jobs classification_only",
        "post /v1/jobs decoding.instructions.n",
        "post /v1/jobs decoding.instances.temperature",
        "post /v1/seed-sets tasks[0].is_classification",
    } <= set(checked), checked
    assert http.get("/v1/jobs").json()["items"] == []
    assert http.get("/v1/seed-sets").json()["items"][0]["id"] == seed_set_id  # no other set made
    # the valid bodies themselves are accepted: the refusals above are the wrong values'
    assert http.post("/v1/jobs", json=valid[("post", "/v1/jobs")]).status_code == 202
    assert http.post("/v1/seed-sets", json=valid[("post", "/v1/seed-sets")]).status_code == 201


def query_integer_is_exact(http: httpx.Client, method: str, url: str, name: str, low: int, high: int) -> None:
    @given(
        text=st.one_of(
            st.text(st.characters(exclude_categories=["Cs"]), max_size=6),
            st.sampled_from(["1e3", "10.0", " 10", "10 ", "+10", "1_0", "١٠", "１０", "0x10", "NaN", "10\n"]),
        ).filter(lambda t: not EXACT_INTEGER.fullmatch(t))
    )
    @EXAMPLES
    def refused(text: str) -> None:
        r = http.request(method, url, params={name: text})
        assert (None, name) in faults(r), (name, repr(text), r.text[:300])

    @given(number=st.integers(low, high))
    @hsettings(max_examples=10, deadline=None, derandomize=True)
    def read(number: int) -> None:
        r = http.request(method, url, params={name: str(number)})
        assert r.status_code == 200, r.text[:300]

    refused()
    if method == "get":  # other methods need a body too: their integers' acceptance is tested with it
        read()


def test_query_integers_parse_exactly(live):
    """Every integer query parameter of every operation: text that is not exactly an integer is a 422
    naming the parameter (1e3, 10.0, " 10", +10, 1_0, other scripts' digits...); an integer is read."""
    _, http, seed_set_id = live
    job = http.post("/v1/jobs", json={"seed_set_id": seed_set_id, "num_instructions": 2}).json()["id"]
    spec = http.get("/openapi.json").json()
    checked = []
    for method, path, op in operations(spec):
        for param in op.get("parameters", []):
            kind = param.get("schema", {}).get("type")
            if param["in"] == "header":
                assert kind in (None, "string"), f"{method} {path}: a typed header {param['name']}"
            if param["in"] != "query" or kind not in ("integer", "number", "boolean"):
                continue
            url = path.replace("{job_id}", job)
            name = param["name"]
            if kind == "boolean":  # exactly true or false ("true" long-polls here, so only "false" is read)
                for text in ("1", "0", "True", "FALSE", "yes", "on", " false", ""):
                    r = http.request(method, url, params={name: text})
                    assert faults(r) == {(None, name)}, (url, name, text, r.text[:200])
                assert http.request(method, url, params={name: "false"}).status_code == 200, (url, name)
                checked.append(f"{method} {path} {name}")
                continue
            assert kind == "integer", f"{method} {path} {param['name']}: no exact form for {kind}"
            low, high = param["schema"].get("minimum", 1), param["schema"].get("maximum", 1000)

            query_integer_is_exact(http, method, url, name, low, high)
            checked.append(f"{method} {path} {name}")
    assert {
        "get /v1/jobs limit",
        "get /v1/seed-sets limit",
        "get /v1/jobs/{job_id}/decisions limit",
        "get /v1/jobs/{job_id}/events follow",
    } <= set(checked), checked


def test_lax_types_of_the_report_are_refused(live):
    """The report's probes: 5.5 and "5" for num_instructions; limit=1e3 stays refused, limit=10 is fine."""
    _, http, seed_set_id = live
    for value in (5.5, "5", 5.0, True):
        r = http.post("/v1/jobs", json={"seed_set_id": seed_set_id, "num_instructions": value})
        assert faults(r) == {(None, "num_instructions")}, value
    assert faults(http.get("/v1/jobs?limit=1e3")) == {(None, "limit")}
    assert http.get("/v1/jobs?limit=10").status_code == 200
    r = http.post("/v1/jobs", json={"seed_set_id": seed_set_id, "num_instructions": 2, "seed": "7"})
    assert faults(r) == {(None, "seed")}
    # a header is text; a name in it follows the names' rule (no control characters, tab included)
    r = http.post(
        "/v1/jobs",
        json={"seed_set_id": seed_set_id, "num_instructions": 2},
        headers={"Idempotency-Key": "a\tb"},
    )
    assert faults(r) == {(None, "Idempotency-Key")}


# --- control characters, in the three upload forms ---


def upload(http: httpx.Client, form: str, tasks: list[dict], name: str | None = None) -> httpx.Response:
    if form == "json":
        return http.post("/v1/seed-sets", json={"tasks": tasks, **({"name": name} if name else {})})
    lines = "".join(json.dumps(t) + "\n" for t in tasks).encode()
    params = {"name": name} if name else {}
    if form == "jsonl":
        return http.post("/v1/seed-sets", content=lines, headers=NDJSON, params=params)
    return http.post("/v1/seed-sets", files={"file": ("seeds.jsonl", lines)}, data=params)


def where(form: str, index: int, field: str) -> tuple[int | None, str]:
    """The (line, field) a fault of task `index` is reported as: a JSON body names tasks[i]; files, lines."""
    return (None, f"tasks[{index}].{field}") if form == "json" else (index + 1, field)


@pytest.mark.parametrize("form", ["json", "jsonl", "multipart"])
def test_control_characters_are_refused_in_every_upload_form(live, form):
    _, http, _ = live
    bad = [
        GOOD_TASK,
        {**GOOD_TASK, "id": "t2", "instruction": "Say\u0000 hello."},
        {**GOOD_TASK, "id": "t3", "instances": [{"input": "a\u001bb", "output": "x\u007f\ry"}]},
        {**GOOD_TASK, "id": "t\t4", "name": "a\nname"},
        {**GOOD_TASK, "id": "t5", "motivation_app": "\u0007"},
    ]
    r = upload(http, form, bad)
    assert faults(r) == {
        where(form, 1, "instruction"),
        where(form, 2, "instances[0].input"),
        where(form, 2, "instances[0].output"),
        where(form, 3, "id"),
        where(form, 3, "name"),
        where(form, 4, "motivation_app"),
    }, r.text
    messages = {(e.get("line"), e["field"]): e["message"] for e in r.json()["errors"]}
    assert messages[where(form, 1, "instruction")] == (
        "Control character U+0000 at position 3 is not allowed (only tab and newline are)."
    )
    assert "U+000D" in messages[where(form, 2, "instances[0].output")]  # CR; DEL (U+007F) is not C0
    # the seed set's own name, wherever it is given
    assert faults(upload(http, form, [GOOD_TASK], name="seeds\u0000")) == {(None, "name")}
    # tab and newline are text in instructions, inputs and outputs
    text = {**GOOD_TASK, "instruction": "List:\n\t1. one", "instances": [{"input": "a\tb", "output": "c\nd"}]}
    assert upload(http, form, [text]).status_code == 201


def test_a_raw_nul_byte_in_a_file_line_is_refused_with_its_line(live):
    _, http, _ = live
    data = json.dumps(GOOD_TASK).encode() + b'\n{"id": "x", "instruction": "a\x00b", "instances": []}\n'
    for r in (
        http.post("/v1/seed-sets", content=data, headers=NDJSON),
        http.post("/v1/seed-sets", files={"file": ("s.jsonl", data)}),
    ):
        errors = problem(r, 422)["errors"]
        assert [(e["line"], e["field"]) for e in errors] == [(2, "(line)")]
        assert "control character" in errors[0]["message"].lower()


# --- every fault of a request in one answer ---


@pytest.mark.parametrize("form", ["json", "jsonl", "multipart"])
def test_blank_instruction_and_empty_output_are_reported_together(live, form):
    _, http, _ = live
    task = {"id": "t1", "instruction": "  ", "instances": [{"input": "", "output": ""}]}
    assert faults(upload(http, form, [GOOD_TASK, task, GOOD_TASK])) == {
        where(form, 1, "instruction"),
        where(form, 1, "instances[0].output"),
        where(form, 1, "id"),  # a duplicate of the first task's id, named with the task's other faults
        where(form, 2, "id"),
    }


def test_a_job_request_names_every_fault_at_once(live):
    _, http, _ = live
    r = http.post(
        "/v1/jobs",
        json={
            "seed_set_id": "0" * 64,
            "num_instructions": "5",
            "profile": "elsewhere",
            "decoding": {"instances": {"top_p": "0.5"}},
            "webhook": "http://x",
        },
        headers={"Idempotency-Key": "k" * 201},
    )
    assert faults(r) == {
        (None, "seed_set_id"),  # does not exist: named with the rest (alone it is a 404)
        (None, "num_instructions"),
        (None, "profile"),
        (None, "decoding.instances.top_p"),
        (None, "webhook"),
        (None, "Idempotency-Key"),
    }, r.text
    r = http.post("/v1/jobs", json={"seed_set_id": "0" * 64, "num_instructions": 5})
    assert problem(r, 404)["detail"] == f"no seed set {'0' * 64}"
    # the operator's limit and the seed set's content are checked with the schema's faults
    paper_without_classification = b"".join(
        line + b"\n" for line in SEEDS.splitlines() if b'"is_classification": true' not in line
    )
    sid = http.post("/v1/seed-sets", content=paper_without_classification, headers=NDJSON).json()["id"]
    r = http.post(
        "/v1/jobs",
        json={"seed_set_id": sid, "num_instructions": 10**5, "classification_only": True, "seed": -1},
    )
    assert faults(r) == {(None, "classification_only"), (None, "seed")}, r.text
    assert http.get("/v1/jobs").json()["items"] == []


# --- request lines and headers: the app's limit below gunicorn's ---


def test_long_urls_get_a_problem_and_gunicorns_limits_are_the_settings(live, settings, redis, tmp_path):
    url, http, seed_set_id = live
    job = http.post("/v1/jobs", json={"seed_set_id": seed_set_id, "num_instructions": 2}).json()["id"]
    r = http.get(f"/v1/jobs/{job}/dataset/{'a' * 5000}")  # the report's probe
    assert "4096" in problem(r, 414)["detail"] and r.headers["X-Request-ID"]
    assert problem(http.get(f"/v1/jobs?state={'x' * 4100}"), 414)
    assert problem(http.get(f"/v1/jobs/{job}/dataset/{'a' * 4000}"), 409)  # under the limit: the app's answer
    # beyond gunicorn's request-line limit (8190), gunicorn answers itself (docs/api.md)
    r = http.get(f"/v1/jobs/{job}/dataset/{'a' * 8200}")
    assert r.status_code == 414 and r.headers["content-type"] == "text/html"
    # gunicorn's limits are the settings': a second server with a lower header count
    env = {
        **settings.to_env(),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "GUNICORN_LIMIT_REQUEST_FIELDS": "20",
    }
    proc, small = gunicorn(env, tmp_path / "small.log", workers=1)
    try:
        many = {f"X-H{i}": "1" for i in range(25)}
        assert httpx.get(f"{small}/healthz", headers=many).status_code == 431
        assert httpx.get(f"{url}/healthz", headers=many).status_code == 200
    finally:
        proc.stop()


def test_the_charts_limits_are_the_settings_defaults():
    from jobs.settings import Settings
    from tests.test_deploy import VALUE_SETS, render

    config = next(d for d in render(VALUE_SETS["defaults"]) if d["kind"] == "ConfigMap")["data"]
    loaded, defaults = Settings.from_env({**config, "REDIS_URL": "redis://x:6379/0"}), Settings()
    for name in (
        "max_url_chars",
        "gunicorn_limit_request_line",
        "gunicorn_limit_request_fields",
        "gunicorn_limit_request_field_size",
    ):
        assert getattr(loaded, name) == getattr(defaults, name), name
    assert {"GUNICORN_LIMIT_REQUEST_LINE", "MAX_URL_CHARS"} <= set(config)
