"""Every request body the engine sends, and every answer of the scripted server, checked against OpenAI's
published OpenAPI description (tests/contracts/openai-openapi.subset.yaml, cut from it by
scripts/vendor_openai_spec.py).

A request passes when it validates against its operation's request schema, uses no property the
description marks `deprecated`, and names none it does not describe (but for the extensions listed per
mode). The scripted server's 200 answers must validate against the operation's response schema, so it
cannot drift from the real API. The requests per path and mode go to .run/contract-requests.md.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from jobs.method.checkpoint import FileStore
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from jobs.method.transport import Waiting
from jobs.method.transport.rate_limits import duration
from tests.conftest import ROOT, fake_endpoint
from tests.fake_llm import FakeLLM, Script

SUBSET = ROOT / "tests" / "contracts" / "openai-openapi.subset.yaml"
BASE = "https://contracts.invalid/openai-openapi.subset.yaml"  # referencing needs an absolute URI
PATHS = ("/completions", "/chat/completions", "/files", "/batches", "/batches/{batch_id}")


def _openapi_31(node: Any) -> Any:
    """The description in plain OpenAPI 3.1 (JSON Schema 2020-12): `nullable: true`, OpenAPI 3.0's
    word that the spec still uses, becomes an anyOf with null; local $refs become absolute. A
    `deprecated` mark stays on the outer schema too, where the walk for deprecated properties sees it."""
    if isinstance(node, list):
        return [_openapi_31(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_31(v) for k, v in node.items() if k != "nullable"}
    if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#"):
        out["$ref"] = BASE + out["$ref"]
    if node.get("nullable") is True:
        outer = {"anyOf": [out, {"type": "null"}]}
        if out.get("deprecated") is True:
            outer["deprecated"] = True
        return outer
    return out


@dataclass
class Findings:
    deprecated: set[str] = field(default_factory=set)  # paths of values whose schema is deprecated
    keys: dict[str, set[str]] = field(default_factory=dict)  # an object's path -> its keys
    declared: dict[str, set[str]] = field(default_factory=dict)  # path -> keys some schema names
    open: set[str] = field(default_factory=set)  # paths of objects any key may be added to

    def undeclared(self) -> set[str]:
        return {
            f"{path}.{key}".lstrip(".")
            for path, keys in self.keys.items()
            if path in self.declared and path not in self.open
            for key in keys - self.declared[path]
        }


class Contract:
    """OpenAI's description, as validators for its operations' request and response bodies."""

    def __init__(self, path: Path = SUBSET):
        self.doc = _openapi_31(yaml.safe_load(path.read_text()))
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(BASE, resource)

    def resolve(self, ref: str) -> Any:
        node: Any = self.doc
        for part in ref.removeprefix(BASE + "#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def request_schema(
        self, path: str, method: str = "post", content: str = "application/json"
    ) -> dict[str, Any]:
        return self.doc["paths"][path][method]["requestBody"]["content"][content]["schema"]

    def response_schema(self, path: str, status: str, method: str = "post") -> dict[str, Any]:
        answer = self.doc["paths"][path][method]["responses"][status]
        if "$ref" in answer:
            answer = self.resolve(answer["$ref"])
        return answer["content"]["application/json"]["schema"]

    def validator(self, schema: dict[str, Any]) -> Any:
        return OAS31Validator(schema, registry=self.registry)

    def errors(self, instance: Any, schema: dict[str, Any]) -> list[str]:
        found = self.validator(schema).iter_errors(instance)
        return [f"{'.'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:300]}" for e in found]

    def findings(self, instance: Any, schema: dict[str, Any]) -> Findings:
        found = Findings()
        self._walk(instance, schema, "", found)
        return found

    def _walk(self, instance: Any, schema: Any, path: str, found: Findings) -> None:
        """Every schema that applies to the instance, by the branches it matches: deprecated marks, and
        the keys each object's schemas name."""
        if not isinstance(schema, dict):
            return
        if schema.get("deprecated") is True:
            found.deprecated.add(path or "(body)")
        if isinstance(schema.get("$ref"), str):
            self._walk(instance, self.resolve(schema["$ref"]), path, found)
        for sub in schema.get("allOf", ()):
            self._walk(instance, sub, path, found)
        for key in ("anyOf", "oneOf"):
            for sub in schema.get(key, ()):
                if self.validator(sub).is_valid(instance):
                    self._walk(instance, sub, path, found)
        if isinstance(instance, dict):
            properties = schema.get("properties", {})
            found.keys[path] = set(instance)
            if properties:
                found.declared.setdefault(path, set()).update(properties)
            extra = schema.get("additionalProperties")
            if extra is True or isinstance(extra, dict):
                found.open.add(path)
            for key, value in instance.items():
                if key in properties:
                    self._walk(value, properties[key], f"{path}.{key}", found)
                elif isinstance(extra, dict):
                    self._walk(value, extra, f"{path}.{key}", found)
        if isinstance(instance, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(instance):
                self._walk(item, schema["items"], f"{path}[{i}]", found)


@cache
def contract() -> Contract:
    return Contract()


@dataclass(frozen=True)
class Mode:
    api: str
    response_format: str | None = None
    reasoning: bool = False
    batch: bool = False  # through the Batch API: each JSONL line's body is checked as a request
    # properties OpenAI's description does not name that this mode sends on purpose, and why
    extensions: tuple[str, ...] = ()
    script: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        parts = (self.api, self.response_format, "reasoning" * self.reasoning, "batch" * self.batch)
        return "+".join(filter(None, parts))

    @property
    def path(self) -> str:
        return "/chat/completions" if self.api == "chat" else "/completions"


MODES = {
    mode.name: mode
    for mode in (
        Mode("completions"),
        Mode("chat"),
        # llama.cpp's server reads the schema beside json_object: OpenAI's JSON mode takes none
        Mode("chat", "json_object", extensions=("response_format.schema",)),
        # the scripted server refuses a schema strict Structured Outputs would refuse
        Mode("chat", "json_schema", script={"strict_schemas": True}),
        Mode("chat", "json_schema", reasoning=True, script={"strict_schemas": True}),
        Mode("completions", batch=True),
        Mode("chat", "json_schema", batch=True, script={"strict_schemas": True}),
    )
}
# An answer's operation: (path, method) in the description, by the path the scripted server logs it
# under ("GET " before a read's); None: not JSON (a file's content)
OPERATIONS = (
    (re.compile(r"/(chat/)?completions"), None),
    (re.compile(r"/files"), ("/files", "post")),
    (re.compile(r"/batches"), ("/batches", "post")),
    (re.compile(r"/batches/[\w-]+/cancel"), ("/batches/{batch_id}/cancel", "post")),
    (re.compile(r"GET /files(\?.*)?"), ("/files", "get")),
    (re.compile(r"GET /batches(\?.*)?"), ("/batches", "get")),
    (re.compile(r"GET /batches/[\w-]+"), ("/batches/{batch_id}", "get")),
    (re.compile(r"GET /files/[\w-]+/content"), ("/files/{file_id}/content", "get")),
)


def operation(logged: str) -> tuple[str, str]:
    for pattern, op in OPERATIONS:
        if pattern.fullmatch(logged):
            return op or (logged, "post")
    raise AssertionError(f"no operation for {logged!r}")


@dataclass
class Exchanges:
    bodies: list[tuple[str, dict[str, Any]]]
    answers: list[tuple[str, int, dict[str, str], bytes]]
    stats: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)  # batch mode: the output files' lines


def run_mode(mode: Mode, tmp: Path, seed_tasks) -> Exchanges:
    """A whole small run in this mode on the scripted server, every stage (classification by
    log-probabilities where the mode gives them)."""
    script = Script(logprobs="top", **mode.script)
    with FakeLLM(script) as server:
        endpoint = replace(
            fake_endpoint(server),
            api=mode.api,
            response_format=mode.response_format,
            reasoning=mode.reasoning,
            mode="batch" if mode.batch else "online",
        )
        # with the judge: its requests are checked in every mode too
        recipe = Recipe.build(
            {"num_instructions": 5, "seed": 9, "classification_method": "fitted", "judge_threshold": 2}
        )
        for _ in range(100):  # batch mode: again after each wait, as the worker's polls do
            run = Run(
                mode.name, seed_tasks, recipe, endpoint, FileStore(tmp / "state"), execution=Execution(2)
            )
            try:
                execute(run)
                break
            except Waiting:
                continue
        exports.export(run, tmp / "out")
        outputs = [
            json.loads(line)
            for f in script.batches.files.values()
            if f["purpose"] == "batch_output"
            for line in f["content"].splitlines()
        ]
    stats = json.loads((tmp / "out" / "stats.json").read_text())
    return Exchanges(list(script.bodies), list(script.answers), stats, outputs)


class Runs(dict[str, Exchanges]):
    """Each mode's run, made when a test first asks for it (a mode that fails fails its own tests)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, seed_tasks: list) -> None:
        super().__init__()
        self.tmp, self.seed_tasks = tmp_path_factory, seed_tasks

    def __missing__(self, name: str) -> Exchanges:
        self[name] = run_mode(MODES[name], self.tmp.mktemp(name), self.seed_tasks)
        return self[name]


@pytest.fixture(scope="module")
def exchanges(tmp_path_factory, seed_tasks) -> Runs:
    return Runs(tmp_path_factory, seed_tasks)


def table(out: dict[str, Exchanges]) -> str:
    """Requests per operation and mode, and what rode on them: printed, and left in .run/. In batch mode
    the completions are the input files' lines."""
    ops = [("post", p) for p in PATHS if p != "/batches/{batch_id}"]
    ops += [("get", "/batches/{batch_id}"), ("get", "/files/{file_id}/content")]
    rows = [
        "| mode | "
        + " | ".join(f"`{m.upper()} {p}`" for m, p in ops)
        + " | log-probabilities | response_format |"
    ]
    rows.append("|---" * (len(ops) + 3) + "|")
    for name, ex in out.items():
        per_op = Counter(("post", path) for path, _ in ex.bodies)
        per_op.update(
            (method, path)
            for path, method in (operation(a[0]) for a in ex.answers if a[0].startswith("GET "))
        )
        logprobs = sum(1 for _, body in ex.bodies if body.get("logprobs"))
        formats = sum(1 for _, body in ex.bodies if body.get("response_format"))
        rows.append(
            f"| {name} | " + " | ".join(str(per_op[op]) for op in ops) + f" | {logprobs} | {formats} |"
        )
    text = "\n".join(rows) + "\n"
    (ROOT / ".run").mkdir(exist_ok=True)
    (ROOT / ".run" / "contract-requests.md").write_text(text)
    print("\n" + text)
    return text


@pytest.mark.parametrize("name", MODES)
def test_every_request_is_valid_against_openais_description(exchanges, name) -> None:
    ex, mode, spec = exchanges[name], MODES[name], contract()
    assert ex.bodies and ex.stats["instructions_kept"] == 5 and ex.stats["instances_kept"] > 0
    paths = {path for path, _ in ex.bodies}
    assert paths == {mode.path, *(("/files", "/batches") * mode.batch)}
    extensions: set[str] = set()
    for path, body in ex.bodies:
        content = "multipart/form-data" if path == "/files" else "application/json"
        schema = spec.request_schema(path, content=content)
        assert spec.errors(body, schema) == [], json.dumps(body)[:2000]
        found = spec.findings(body, schema)
        assert found.deprecated == set(), (found.deprecated, body)
        assert found.undeclared() <= set(mode.extensions), (found.undeclared(), body)
        extensions |= found.undeclared()
    assert extensions == set(mode.extensions)  # an extension no longer sent leaves this list


def test_classification_asks_for_log_probabilities_where_the_mode_gives_them(exchanges) -> None:
    """The runs above cover the log-probability requests: completions and plain chat ask for them;
    structured chat replies carry none, and reasoning models give none, so those runs classify by the
    answer's text."""
    for name in MODES:
        ex = exchanges[name]
        asked = [body for _, body in ex.bodies if body.get("logprobs")]
        methods = ex.stats["classification_method"]["methods"]
        if MODES[name].response_format is None and not MODES[name].reasoning:
            assert asked and "fitted" in methods, (name, methods)
        else:
            assert not asked and methods == {"text": 5}, (name, methods)


@pytest.mark.parametrize("name", MODES)
def test_the_scripted_servers_answers_follow_openais_description(exchanges, name) -> None:
    spec, mode, ex = contract(), MODES[name], exchanges[name]
    answered = [(operation(path), body) for path, status, _, body in ex.answers if status == 200]
    assert len(answered) == len(ex.answers)  # nothing refused
    completions = [json.loads(body) for (path, _), body in answered if path == mode.path]
    if mode.batch:  # each line's answer, in the output files
        assert not completions and len(ex.outputs) == sum(1 for path, _ in ex.bodies if path == mode.path)
        completions = [line["response"]["body"] for line in ex.outputs]
        assert {op for op, _ in answered} >= {
            ("/files", "post"),
            ("/batches", "post"),
            ("/batches/{batch_id}", "get"),
            ("/files/{file_id}/content", "get"),
        }
    for (path, method), body in answered:
        if path not in (mode.path, "/files/{file_id}/content"):
            schema = spec.response_schema(path, "200", method)
            assert spec.errors(json.loads(body), schema) == [], body[:2000]
    with_logprobs = 0
    for body in completions:
        assert spec.errors(body, spec.response_schema(mode.path, "200")) == [], json.dumps(body)[:2000]
        with_logprobs += any(c.get("logprobs") for c in body["choices"])
    assert with_logprobs > 0 or mode.response_format is not None


def test_the_scripted_servers_rate_limit_answers_follow_openais_description() -> None:
    """Its x-ratelimit-* headers read as OpenAI's do, and a request over the limit gets OpenAI's 429:
    an error body, and Retry-After in whole seconds."""
    spec = contract()
    body = {"model": "fake", "prompt": "Say hi.", "max_tokens": 5}
    with FakeLLM(Script(limit_requests=1, limit_window=5.0)) as server:
        ok = httpx.post(f"{server.base_url}/completions", json=body)
        over = httpx.post(f"{server.base_url}/completions", json=body)
    assert ok.status_code == 200 and over.status_code == 429
    for answer in (ok, over):
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        assert 4.0 <= (duration(answer.headers["x-ratelimit-reset-requests"]) or 0) <= 5.0
    assert spec.errors(over.json(), spec.response_schema("/completions", "429")) == []
    header = spec.resolve(spec.doc["paths"]["/completions"]["post"]["responses"]["429"]["$ref"])
    retry_after = over.headers["retry-after"]
    assert (
        retry_after.isdigit()
        and spec.errors(int(retry_after), header["headers"]["Retry-After"]["schema"]) == []
    )


def test_the_checks_catch_what_they_are_for() -> None:
    """Each check on a body it must refuse: a wrong type, a deprecated parameter, a name OpenAI's
    description does not have, and an answer without a field it requires."""
    spec = contract()
    chat = spec.request_schema("/chat/completions")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5}
    assert spec.errors(body, chat) == [] and spec.findings(body, chat).deprecated == set()
    assert spec.errors({**body, "temperature": "hot"}, chat)
    assert spec.errors({**body, "stop": None}, chat) == []  # nullable
    assert spec.findings({**body, "max_tokens": 5}, chat).deprecated == {".max_tokens"}
    assert spec.findings({**body, "max_tokens": None}, chat).deprecated == {".max_tokens"}
    assert spec.findings({**body, "max_complete_tokens": 5}, chat).undeclared() == {"max_complete_tokens"}
    nested = {**body, "response_format": {"type": "json_object", "schema": {"type": "object"}}}
    assert spec.findings(nested, chat).undeclared() == {"response_format.schema"}
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": "hi", "refusal": None},
            }
        ],
    }
    schema = spec.response_schema("/chat/completions", "200")
    assert spec.errors(answer, schema) == []
    broken = copy.deepcopy(answer)
    del broken["choices"][0]["message"]["refusal"]
    assert spec.errors(broken, schema)


# What the description marks deprecated in the subset, as cut (openapi.yaml at the commit the subset's
# header names). The engine must never send the request parameters among them unless a profile says so.
DEPRECATED_UPSTREAM = {
    "ChatCompletionFunctions",
    "ChatCompletionRequestAssistantMessage/properties/function_call/anyOf[0]",
    "ChatCompletionRequestFunctionMessage",
    "ChatCompletionResponseMessage/properties/function_call",
    "ChatCompletionStreamResponseDelta/properties/function_call",
    "CreateChatCompletionRequest/allOf[1]/properties/max_tokens",
    "CreateChatCompletionRequest/allOf[1]/properties/seed",
    "CreateChatCompletionRequest/allOf[1]/properties/function_call",
    "CreateChatCompletionRequest/allOf[1]/properties/functions",
    "CreateChatCompletionResponse/properties/system_fingerprint",
    "CreateChatCompletionStreamResponse/properties/system_fingerprint",
    "ModelResponseProperties/properties/user",
    "ModelResponseProperties/properties/prompt_cache_retention",
    "OpenAIFile/properties/status",
    "OpenAIFile/properties/status_details",
}


def deprecated_paths(node: Any, path: str = "") -> set[str]:
    found = {path} if isinstance(node, dict) and node.get("deprecated") is True else set()
    if isinstance(node, dict):
        for key, value in node.items():
            found |= deprecated_paths(value, f"{path}/{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found |= deprecated_paths(value, f"{path}[{i}]")
    return found


def test_the_subset_is_the_scripts_cut_unedited() -> None:
    """The vendored file is what scripts/vendor_openai_spec.py wrote: the hash in its header is the hash
    of the lines below it, and the deprecated marks are upstream's, every one (a hand edit that drops
    `deprecated: true` from `seed` would let the engine send what OpenAI deprecated, unseen)."""
    from scripts.vendor_openai_spec import HASHED, body_hash

    header, body = [], SUBSET.read_text()
    while body.startswith("#"):
        line, body = body.split("\n", 1)
        header.append(line)
    pinned = [line.split(HASHED, 1)[1] for line in header if HASHED in line]
    assert pinned == [body_hash(body)], "the subset was edited by hand: run scripts/vendor_openai_spec.py"
    schemas = yaml.safe_load(body)["components"]["schemas"]
    assert deprecated_paths(schemas) == DEPRECATED_UPSTREAM


def test_the_subset_is_what_the_script_cuts() -> None:
    """Every operation the engine will use is there, with each schema it references."""
    raw = yaml.safe_load(SUBSET.read_text())
    assert {(p, m) for p, ops in raw["paths"].items() for m in ops} == {
        ("/completions", "post"),
        ("/chat/completions", "post"),
        ("/files", "post"),
        ("/batches", "post"),
        ("/batches/{batch_id}", "get"),
        ("/files", "get"),
        ("/files/{file_id}/content", "get"),
        ("/batches", "get"),
        ("/batches/{batch_id}/cancel", "post"),
    }
    text = json.dumps(raw)
    for ref in {r for r in text.split('"$ref": "')[1:]}:
        target = ref.split('"', 1)[0]
        node: Any = raw
        for part in target.removeprefix("#/").split("/"):
            node = node[part]  # a dangling reference raises
    assert (SUBSET.parent / "LICENSE-openai-openapi").read_text().startswith("The MIT License")


def test_requests_per_path_and_mode(exchanges) -> None:
    text = table({name: exchanges[name] for name in MODES})
    assert all(f"| {name} |" in text for name in MODES)
