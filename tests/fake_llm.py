"""A scripted OpenAI-compatible server, for fault injection and fast deterministic runs.

Answers /v1/completions and /v1/chat/completions with text that depends only on the prompt, the seed
and the decoding parameters, shaped like what each Self-Instruct stage expects (with some candidates
every filter should drop), and injects faults at a configurable rate: 429 with Retry-After, 500,
responses slower than the client's timeout, dropped connections, malformed bodies and garbage text.
Its answers follow OpenAI's published schemas (tests/test_contracts.py checks them); like the real API
it can refuse parameters and Structured Outputs schemas that strict mode does not take, and enforce a
rate limit, told in x-ratelimit-* headers.

    python -m tests.fake_llm --port 8099 --fault-rate 0.3
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "slow", "drop", "malformed", "garbage")
# "badjson": a structured chat reply that is not JSON (only when a test asks for it)
ALL_FAULTS = (*FAULTS, "400", "401echo", "badjson")

VERBS = (
    "Write",
    "Describe",
    "List",
    "Explain",
    "Summarize",
    "Classify",
    "Translate",
    "Compare",
    "Suggest",
    "Rewrite",
    "Identify",
    "Generate",
    "Find",
    "Rank",
    "Outline",
    "Plan",
    "Evaluate",
    "Create",
)
NOUNS = (
    "recipe",
    "poem",
    "email",
    "budget",
    "schedule",
    "story",
    "argument",
    "review",
    "headline",
    "joke",
    "letter",
    "speech",
    "question",
    "riddle",
    "slogan",
    "tweet",
    "essay",
    "summary",
    "proverb",
    "menu",
    "itinerary",
    "workout",
    "lesson",
    "contract",
    "apology",
    "invitation",
    "complaint",
    "resume",
    "toast",
    "lullaby",
    "limerick",
    "report",
    "survey",
    "quiz",
    "dialogue",
    "advertisement",
    "biography",
    "forecast",
)
TOPICS = (
    "gardening",
    "chess",
    "volcanoes",
    "jazz",
    "taxes",
    "penguins",
    "bread",
    "rainforests",
    "robots",
    "marathons",
    "origami",
    "coffee",
    "satellites",
    "bees",
    "pirates",
    "bicycles",
    "glaciers",
    "tea",
    "libraries",
    "dinosaurs",
    "sailing",
    "yoga",
    "comets",
    "cheese",
    "castles",
    "tigers",
    "opera",
    "soap",
    "fossils",
    "tennis",
    "lighthouses",
    "mushrooms",
    "deserts",
    "violins",
    "trains",
    "honey",
    "kites",
)
AUDIENCES = (
    "a child",
    "a retiree",
    "a new employee",
    "a tourist",
    "a chef",
    "a student",
    "a farmer",
    "a nurse",
    "a beginner",
    "an expert",
    "a teenager",
    "a landlord",
    "a scientist",
    "a coach",
    "a neighbour",
)
LABELS = ("positive", "negative", "neutral", "yes", "no", "spam", "not spam")


def _rng(*parts: Any) -> random.Random:
    return random.Random(hashlib.sha256(repr(parts).encode()).digest())


def _instruction(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.1:
        return f"{rng.choice(VERBS)} it now."  # too short
    if shape < 0.2:
        return f"Draw a picture of {rng.choice(TOPICS)} for {rng.choice(AUDIENCES)}."  # blacklisted
    if shape < 0.27:
        return f"Write a program that sorts {rng.choice(TOPICS)} by popularity."
    if shape < 0.34:
        return f'"{rng.choice(TOPICS)}" is a word; use it in a sentence.'  # leading punctuation
    noun, topic, audience = rng.choice(NOUNS), rng.choice(TOPICS), rng.choice(AUDIENCES)
    extra = rng.choice(
        ("", f" in {rng.randint(2, 9)} sentences", " with a friendly tone", " and explain why")
    )
    return f"{rng.choice(VERBS)} a {noun} about {topic} for {audience}{extra}."


def _listed(prompt: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\d+\. (.+)$", prompt, re.M)]


def compose(prompt: str, seed: int | None, temperature: float) -> str:
    """The text a well-behaved model might write for this prompt."""
    rng = _rng(prompt, seed if temperature > 0 else None)
    if prompt.rstrip().endswith("Is it classification?"):
        return " Yes" if rng.random() < 0.3 else " No"
    if re.search(r"\n\d+\.$", prompt):
        items = [_instruction(rng) for _ in range(rng.randint(1, 6))]
        listed = _listed(prompt)
        if listed and rng.random() < 0.3:
            items.append(rng.choice(listed))  # a copy of a prompt instruction: too similar
        number = int(re.search(r"(\d+)\.$", prompt).group(1))  # type: ignore[union-attr]
        return " " + "".join(
            f"{item}\n{number + i + 1}. " if i < len(items) - 1 else item for i, item in enumerate(items)
        )
    if "Task:" in prompt and prompt.endswith("\n"):
        task = prompt.rsplit("Task:", 1)[1].strip()
        if "class labels" in prompt.split("\n", 1)[0]:
            labels = rng.sample(LABELS, rng.randint(1, 3))
            return "".join(
                f"Class label: {lab}\nSentence: {rng.choice(TOPICS)} {rng.choice(NOUNS)} {i}\n"
                for i, lab in enumerate(labels)
            )
        if rng.random() < 0.2:
            return f"Output: A {rng.choice(NOUNS)} about {rng.choice(TOPICS)} ({task[:20]}).\n"
        out = []
        for i in range(1, rng.randint(1, 7) + 1):
            inp = f"{rng.choice(TOPICS)} and {rng.choice(TOPICS)}"
            output = rng.choice((f"A {rng.choice(NOUNS)} on {inp}.", "", "See below:", inp, f"Answer {i}."))
            out.append(f"Example {i}\nInput: {inp}\nOutput: {output}\n")
        return "".join(out)
    return " " + " ".join(rng.choice(TOPICS) for _ in range(rng.randint(3, 30)))


def compose_chat(
    messages: list[dict[str, str]], seed: int | None, temperature: float, structured: bool
) -> str:
    """What a well-behaved instruction-following model might answer to the chat prompts."""
    user = messages[-1]["content"]
    rng = _rng(user, seed if temperature > 0 else None)
    if "Is it classification?" in user:
        answer = "Yes" if rng.random() < 0.3 else "No"
        return json.dumps({"answer": answer}) if structured else answer
    if "numbered list" in user:
        listed = [m.group(1) for m in re.finditer(r"^\d+\. (.+)$", user.split("\n\n")[0], re.M)]
        items = [_instruction(rng) for _ in range(rng.randint(3, 8))]
        if listed and rng.random() < 0.3:
            items.append(rng.choice(listed))  # a copy of an example: too similar
        body = "\n".join(f"{n}. {item}" for n, item in enumerate(items, start=1))
        return f"Here are {len(items)} new tasks:\n\n{body}\n\nI hope these help!"
    if "class label" in user.rsplit("Task:", 1)[-1]:
        labels = rng.sample(LABELS, rng.randint(1, 3))
        pairs = [(lab, f"{rng.choice(TOPICS)} {rng.choice(NOUNS)} {i}") for i, lab in enumerate(labels)]
        if structured:
            return json.dumps({"examples": [{"class_label": lab, "input": inp} for lab, inp in pairs]})
        return "".join(f"Class label: {lab}\nSentence: {inp}\n" for lab, inp in pairs)
    examples = []
    for i in range(1, rng.randint(1, 5) + 1):
        inp = f"{rng.choice(TOPICS)} and {rng.choice(TOPICS)}"
        examples.append((inp, rng.choice((f"A {rng.choice(NOUNS)} on {inp}.", "", inp, f"Answer {i}."))))
    if structured:
        return json.dumps({"examples": [{"input": inp, "output": out} for inp, out in examples]})
    return "".join(f"Example {i}\nInput: {inp}\nOutput: {out}\n" for i, (inp, out) in enumerate(examples, 1))


def strict_schema_problem(schema: Any, where: tuple[str, ...] = ()) -> str | None:
    """Why OpenAI's Structured Outputs would refuse this schema under `strict: true`, as its 400 says
    (every object closed with additionalProperties false and every property required), or None."""
    if isinstance(schema, list):
        return next(filter(None, (strict_schema_problem(item, where) for item in schema)), None)
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"In context={where}, 'additionalProperties' is required to be supplied and to be false."
        if missing := sorted(set(schema.get("properties", {})) - set(schema.get("required", []))):
            return (
                f"In context={where}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
    subschemas = [((*where, key), value) for key, value in schema.items() if key != "properties"]
    subschemas += [
        ((*where, "properties", name), value) for name, value in schema.get("properties", {}).items()
    ]
    return next(filter(None, (strict_schema_problem(value, at) for at, value in subschemas)), None)


def duration(seconds: float) -> str:
    """A reset time the way OpenAI's x-ratelimit-reset-* headers write it: "20ms", "1s", "6m0s"."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(math.ceil(seconds * 1000) / 1000, 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def finish(text: str, stop: list[str] | None, max_tokens: int) -> tuple[str, str]:
    """Apply stop sequences, then the token limit (one token a whitespace-separated word)."""
    cut = min((i for s in stop or [] if (i := text.find(s)) >= 0), default=-1)
    if cut >= 0:
        return text[:cut], "stop"
    words = re.findall(r"\s*\S+", text)
    if len(words) > max_tokens:
        return "".join(words[:max_tokens]), "length"
    return text, "stop"


@dataclass
class Script:
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    retry_after: float = 0.2
    slow_seconds: float = 3.0
    delay: float = 0.0  # seconds added to every answer
    supports_n: bool = False
    seed: int = 0
    schedule: list[str | None] = field(default_factory=list)  # faults for the first requests, in order
    counts: dict[str, int] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)  # answered (not faulted), in answer order
    received: list[str] = field(default_factory=list)  # every request's prompt, in arrival order
    # this share of prompts, picked by a hash of the prompt, is always answered with garbage text:
    # a model that reliably writes nonsense for some prompts (unlike the per-request "garbage" fault)
    garbage_share: float = 0.0
    # chat requests carrying one of these parameters get a 400 naming it, as some hosted models answer
    reject_params: tuple[str, ...] = ()
    # a `strict` json_schema response_format whose schema Structured Outputs would refuse gets a 400
    strict_schemas: bool = False
    chat_requests: list[dict[str, Any]] = field(default_factory=list)  # every chat request's body
    # every POST as received, (path, body); every answer to one, (path, status, headers, body bytes)
    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answers: list[tuple[str, int, dict[str, str], bytes]] = field(default_factory=list)
    # A rate limit like OpenAI's: this many requests and (prompt + completion) tokens a window, told in
    # x-ratelimit-* headers on every answer; a request over either gets a 429. 0: no limit.
    limit_requests: int = 0
    limit_tokens: int = 0
    limit_window: float = 1.0
    tokens: dict[str, int] = field(default_factory=dict)  # prompt and completion tokens answered (words)
    # instructions the first instruction-generation response starts with (an attacker's text, say)
    plant: list[str] = field(default_factory=list)
    # only the instruction prompt sent with this seed takes the planted instructions (None: the first
    # to come), so a straggler of an earlier run cannot take what was planted for the next
    plant_seed: int | None = None
    # How a classification request asking for `logprobs` is answered: "none" ignores the ask (null, as
    # many servers do), "top" gives the first token's alternatives (completions: top_logprobs; chat:
    # logprobs.content), "refuse" answers 500 as llama.cpp's Python server does without logits_all.
    logprobs: str = "none"
    # planted (log P(" Yes"), log P(" No")) by the task text being classified; others from its hash.
    # The greedy text then follows the larger one.
    label_logprobs: dict[str, tuple[float, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._window = (0.0, 0, 0)  # its start (monotonic), requests and tokens used in it

    @property
    def limited(self) -> bool:
        return bool(self.limit_requests or self.limit_tokens)

    def admit(self) -> dict[str, str] | None:
        """Count a request against the rate limit: None when it is over (answer 429), else the headers."""
        with self.lock:
            now = time.monotonic()
            start, requests, tokens = self._window
            if now - start >= self.limit_window:
                start, requests, tokens = now, 0, 0
            over = (self.limit_requests and requests >= self.limit_requests) or (
                self.limit_tokens and tokens >= self.limit_tokens
            )
            if over:
                self.counts["rate_limited"] = self.counts.get("rate_limited", 0) + 1
                self._window = (start, requests, tokens)
                return None
            self._window = (start, requests + 1, tokens)
            return self.limit_headers(now)

    def spend(self, tokens: int) -> dict[str, str]:
        """Count an answer's tokens against the window; the headers as they then stand."""
        with self.lock:
            start, requests, used = self._window
            self._window = (start, requests, used + tokens)
            return self.limit_headers(time.monotonic())

    def limit_headers(self, now: float) -> dict[str, str]:
        start, requests, tokens = self._window
        reset = duration(max(0.0, start + self.limit_window - now))
        headers = {}
        for kind, limit, used in (
            ("requests", self.limit_requests, requests),
            ("tokens", self.limit_tokens, tokens),
        ):
            if limit:
                headers |= {
                    f"x-ratelimit-limit-{kind}": str(limit),
                    f"x-ratelimit-remaining-{kind}": str(max(0, limit - used)),
                    f"x-ratelimit-reset-{kind}": reset,
                }
        return headers

    def retry_in(self) -> float:
        with self.lock:
            return max(0.0, self._window[0] + self.limit_window - time.monotonic())

    def draw_fault(self) -> str | None:
        with self.lock:
            self.counts["requests"] = self.counts.get("requests", 0) + 1
            if self.schedule:
                kind = self.schedule.pop(0)
            elif self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.faults)
            else:
                kind = None
            if kind:
                self.counts[kind] = self.counts.get(kind, 0) + 1
            return kind

    def count_tokens(self, prompt: int, completion: int) -> None:
        with self.lock:
            self.tokens["prompt"] = self.tokens.get("prompt", 0) + prompt
            self.tokens["completion"] = self.tokens.get("completion", 0) + completion

    def garbage_for(self, prompt: str) -> bool:
        return self.garbage_share > 0 and _rng("garbage", prompt).random() < self.garbage_share

    def label_pair(self, prompt: str, asked: bool) -> tuple[float, float] | None:
        """The label log-probabilities of a classification prompt: planted for its task, else (when
        asked for) from its hash; None for other prompts."""
        if "Is it classification?" not in prompt:
            return None
        task = prompt.rsplit("Task: ", 1)[-1].split("\nIs it classification?", 1)[0]
        if task in self.label_logprobs:
            return self.label_logprobs[task]
        if not asked:
            return None
        rng = _rng("logprobs", task)
        return -rng.uniform(0.05, 3.0), -rng.uniform(0.05, 3.0)

    def planted(self, prompt: str, raw: str, seed: int | None = None) -> str:
        """`raw`, after the planted instructions if this is the first instruction prompt to come (with
        `plant_seed`, the one sent with that seed)."""
        listed = re.search(r"\n(\d+)\.$", prompt)
        if not listed or (self.plant_seed is not None and seed != self.plant_seed):
            return raw
        with self.lock:
            items, self.plant = self.plant, []
        number = int(listed.group(1))
        return "".join(f" {item}\n{number + i + 1}." for i, item in enumerate(items)) + raw


class Handler(BaseHTTPRequestHandler):
    script: Script
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        if self.command == "POST":
            with self.script.lock:
                path = self.path.rstrip("/").removeprefix("/v1")
                self.script.answers.append((path, status, dict(headers or {}), body))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(
                200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
            )
        elif self.path == "/stats":
            with self.script.lock:
                self._send(200, json.dumps(self.script.counts).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        chat = self.path.rstrip("/") == "/v1/chat/completions"
        if not chat and self.path.rstrip("/") != "/v1/completions":
            self._send(404, b'{"error": "not found"}')
            return
        script = self.script
        with script.lock:
            script.bodies.append((self.path.rstrip("/").removeprefix("/v1"), copy.deepcopy(body)))
        if chat:
            body["prompt"] = body["messages"][-1]["content"]  # what the logs below record
            with script.lock:
                script.chat_requests.append(body)
            refused = [p for p in script.reject_params if p in body]
            if refused:
                message = f"Unsupported parameter: '{refused[0]}' is not supported with this model."
                self._refuse(message, refused[0], "unsupported_parameter")
                return
            answer_format = body.get("response_format") or {}
            if script.strict_schemas and answer_format.get("type") == "json_schema":
                spec = answer_format.get("json_schema", {})
                problem = strict_schema_problem(spec.get("schema")) if spec.get("strict") else None
                if problem:
                    name = spec.get("name")
                    message = f"Invalid schema for response_format '{name}': {problem}"
                    self._refuse(message, "response_format", "invalid_json_schema")
                    return
        limits: dict[str, str] = {}
        if script.limited:
            admitted = script.admit()
            if admitted is None:
                # whole seconds, at least one, as OpenAI's description of the header says
                wait = max(1, math.ceil(script.retry_in()))
                headers = {"Retry-After": str(wait), **script.limit_headers(time.monotonic())}
                error = {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
                self._send(429, json.dumps({"error": error}).encode(), headers)
                return
            limits = admitted
        with script.lock:
            script.received.append(body.get("prompt", ""))
        fault = script.draw_fault()
        if fault == "429":
            self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": str(script.retry_after)})
            return
        if fault == "401echo":  # a careless endpoint that echoes the key it was given
            echo = json.dumps({"error": {"message": f"bad key: {self.headers.get('Authorization')}"}})
            self._send(401, echo.encode())
            return
        if fault == "400":
            self._send(400, b'{"error": {"message": "bad request: context too long"}}')
            return
        if fault == "500":
            self._send(500, b'{"error": {"message": "internal error"}}')
            return
        if fault == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if fault == "malformed":
            self._send(200, b'{"choices": [{"text": ')
            return
        if fault == "slow":
            time.sleep(script.slow_seconds)
        if script.delay:
            time.sleep(script.delay)
        prompt = body["prompt"]
        with script.lock:
            script.prompts.append(prompt)
        n = body.get("n", 1) if script.supports_n else 1
        seed = body.get("seed")
        if chat:
            pair = script.label_pair(prompt, bool(body.get("logprobs")))
            if pair and body.get("logprobs") and script.logprobs == "refuse":
                self._send(500, b'{"error": {"message": "logprobs is not supported"}}')
                return
            answer = self._chat(body, fault, n, seed, pair)
            if script.limited:
                limits = script.spend(answer["usage"]["total_tokens"])
            self._send(200, json.dumps(answer).encode(), limits)
            return
        pair = script.label_pair(prompt, bool(body.get("logprobs")))
        if pair and body.get("logprobs") and script.logprobs == "refuse":
            message = "logprobs is not supported for models created with logits_all=False"
            self._send(
                500, json.dumps({"error": {"message": message, "type": "internal_server_error"}}).encode()
            )
            return
        choices = []
        for i in range(n):
            logprobs = None
            if fault == "garbage" or script.garbage_for(prompt):
                raw = "".join(random.Random(i).choice("#@!?~ \n") for _ in range(40))
            elif pair:  # a greedy model answers the likelier label
                raw = " Yes" if pair[0] >= pair[1] else " No"
                if body.get("logprobs") and script.logprobs == "top":
                    top = {" Yes": pair[0], " No": pair[1], "\n": -9.0}
                    logprobs = {"tokens": [raw], "token_logprobs": [top[raw]], "top_logprobs": [top]}
            else:
                raw = compose(prompt, None if seed is None else seed + i, body.get("temperature", 1.0))
            raw = script.planted(prompt, raw, seed)
            text, reason = finish(raw, body.get("stop"), body.get("max_tokens", 16))
            choices.append({"index": i, "text": text, "finish_reason": reason, "logprobs": logprobs})
        completion_tokens = sum(len(c["text"].split()) for c in choices)
        script.count_tokens(len(prompt.split()), completion_tokens)
        if script.limited:
            limits = script.spend(len(prompt.split()) + completion_tokens)
        response = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": choices,
            "usage": {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": completion_tokens,
                "total_tokens": len(prompt.split()) + completion_tokens,
            },
        }
        self._send(200, json.dumps(response).encode(), limits)

    def _refuse(self, message: str, param: str, code: str) -> None:
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
        self._send(400, json.dumps({"error": error}).encode())

    def _chat(
        self,
        body: dict[str, Any],
        fault: str | None,
        n: int,
        seed: int | None,
        pair: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        structured = body.get("response_format") is not None
        choices = []
        for i in range(n):
            logprobs = None
            if fault == "garbage" or self.script.garbage_for(body["prompt"]):
                raw = "".join(random.Random(i).choice("#@!?~ \n") for _ in range(40))
            elif pair and not structured:
                raw = "Yes" if pair[0] >= pair[1] else "No"
                if body.get("logprobs") and self.script.logprobs == "top":
                    top = [_token(t, lp) for t, lp in (("Yes", pair[0]), ("No", pair[1]))]
                    lp = pair[0] if raw == "Yes" else pair[1]
                    logprobs = {"content": [{**_token(raw, lp), "top_logprobs": top}], "refusal": None}
            elif fault == "badjson" and structured:
                raw = '{"examples": [{"input": "cut off'
            else:
                s = None if seed is None else seed + i
                raw = compose_chat(body["messages"], s, body.get("temperature", 1.0), structured)
            # max_completion_tokens, or the name it replaced (what llama.cpp's servers know)
            limit = body.get("max_completion_tokens", body.get("max_tokens", 16))
            text, reason = finish(raw, body.get("stop"), limit)
            message = {"role": "assistant", "content": text, "refusal": None}
            choices.append({"index": i, "message": message, "finish_reason": reason, "logprobs": logprobs})
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        completion_tokens = sum(len(c["message"]["content"].split()) for c in choices)
        self.script.count_tokens(prompt_tokens, completion_tokens)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _token(token: str, logprob: float) -> dict[str, Any]:
    """A chat log-probability entry as OpenAI writes one: with the token's UTF-8 bytes."""
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are part of the script


class FakeLLM:
    """The server on a thread: `with FakeLLM(Script(...)) as llm: llm.base_url`."""

    def __init__(self, script: Script | None = None, port: int = 0):
        self.script = script or Script()
        handler = type("BoundHandler", (Handler,), {"script": self.script})
        self.server = _Server(("127.0.0.1", port), handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--faults", nargs="+", default=list(FAULTS), choices=FAULTS)
    parser.add_argument("--retry-after", type=float, default=0.2)
    parser.add_argument("--slow-seconds", type=float, default=3.0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    script = Script(args.fault_rate, tuple(args.faults), args.retry_after, args.slow_seconds, args.delay)
    server = FakeLLM(script, args.port)
    server.server.serve_forever()


if __name__ == "__main__":
    main()
