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
import email.parser
import email.policy
import hashlib
import json
import math
import random
import re
import threading
import time
import urllib.parse
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


def judged(item: str) -> tuple[str, int]:
    """A judge's verdict on the last item shown (jobs.method.prompts.judge's layout): an output like
    "Answer 3." (a placeholder) scores 1, others 2 to 5 by their hash."""
    output = item.rsplit("Response:", 1)[-1].split("\n", 1)[0].strip()
    if re.fullmatch(r"Answer \d+\.", output):
        return "The response is a placeholder, not an answer.", 1
    score = _rng("judge", output).randint(2, 5)
    return f"The response is on the task, rated {score} for its content.", score


def compose(prompt: str, seed: int | None, temperature: float) -> str:
    """The text a well-behaved model might write for this prompt."""
    rng = _rng(prompt, seed if temperature > 0 else None)
    if prompt.endswith("Rationale:"):
        rationale, score = judged(prompt.rsplit("Instruction:", 1)[-1])
        return f" {rationale}\nScore: {score}"
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
    if user.startswith("Rate the response from 1 to 5"):
        rationale, score = judged(user)
        return (
            json.dumps({"rationale": rationale, "score": score})
            if structured
            else (f"Rationale: {rationale}\nScore: {score}")
        )
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
    # an instance prompt asked again, sampled (temperature above 0), is cut at this many tokens
    again_cap: int | None = None
    in_flight: int = 0  # completions and chat requests being answered now
    most_in_flight: int = 0  # and the most there ever were at once
    # every completions and chat request: when it arrived, when it was answered, with what status
    arrivals: list[tuple[float, float, int]] = field(default_factory=list)
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
    # The Batch API (Batches): a batch ends after this many reads of it (validating, in_progress,
    # finalizing, then its end); its end by creation order (then "completed"), and how much of its
    # input an expired or failed one answered first
    batch_polls: int = 3
    batch_outcomes: list[str] = field(default_factory=list)
    batch_partial: float = 0.5
    # reads a cancelling batch takes to be cancelled; it answers batch_partial of its input first, which
    # is billed as OpenAI bills a cancelled batch's finished requests
    cancel_reads: int = 1
    # "files" or "batches": the first upload or batch creation is done, then its answer held this
    # many seconds (`holding` is set meanwhile): a client killed then never hears of it
    hold: dict[str, float] = field(default_factory=dict)
    holding: threading.Event = field(default_factory=threading.Event)
    # "files" or "batches": this many uploads or batch creations are done, then their connection closed
    # before the answer goes out (a proxy reset): the client cannot tell that it was done
    lose: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # /v1/embeddings: every request's texts, and statuses to answer the first requests with (then 200)
    embedding_requests: list[list[str]] = field(default_factory=list)
    embedding_faults: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.batches = Batches(self)
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


# The scripted embedding model: a bag of words hashed into DIMENSIONS, each word first mapped to its
# synonym here, so a paraphrase in other words embeds like its original (ROUGE-L sees the words differ).
SYNONYMS = {
    "compose": "write",
    "draft": "write",
    "pen": "write",
    "tale": "story",
    "narrative": "story",
    "ocean": "sea",
    "brief": "short",
    "concise": "short",
    "describe": "explain",
    "clarify": "explain",
    "kids": "children",
    "youngsters": "children",
}
DIMENSIONS = 64


def embedding(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        digest = hashlib.sha256(SYNONYMS.get(word, word).encode()).digest()
        vector[digest[0] % DIMENSIONS] += 1.0 if digest[1] % 2 else -1.0
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


def _embeddings(script: Script, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
        return (
            400,
            json.dumps({"error": {"message": "input must be a string or a list of strings"}}).encode(),
            {},
        )
    with script.lock:
        status = script.embedding_faults.pop(0) if script.embedding_faults else 200
        script.embedding_requests.append(texts)
    if status != 200:
        return status, json.dumps({"error": {"message": "scripted fault"}}).encode(), {"Retry-After": "0.1"}
    data = [{"object": "embedding", "index": i, "embedding": embedding(t)} for i, t in enumerate(texts)]
    tokens = sum(len(t.split()) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return (
        200,
        json.dumps({"object": "list", "data": data, "model": body.get("model"), "usage": usage}).encode(),
        {},
    )


class Handler(BaseHTTPRequestHandler):
    script: Script
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        if self.command == "POST" or self.path.startswith(("/v1/files", "/v1/batches")):
            with self.script.lock:
                path = self.path.rstrip("/").removeprefix("/v1")
                path = path if self.command == "POST" else f"GET {path}"
                self.script.answers.append((path, status, dict(headers or {}), body))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith(("/v1/files", "/v1/batches")):
            self._send(*self.script.batches.get(self.path))
        elif self.path.rstrip("/") == "/v1/models":
            self._send(
                200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
            )
        elif self.path == "/stats":
            with self.script.lock:
                self._send(200, json.dumps(self.script.counts).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = self.path.rstrip("/")
        if path.startswith(("/v1/files", "/v1/batches")):
            kind = self.headers.get("Content-Type", "")
            status, answer, headers = self.script.batches.post(path, raw, kind)
            if status == 0:  # done, but the answer is lost
                self.close_connection = True
                self.connection.close()
                return
            self._send(status, answer, headers)
            return
        if path == "/v1/embeddings":
            self._send(*_embeddings(self.script, json.loads(raw or b"{}")))
            return
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        body = json.loads(raw or b"{}")
        with self.script.lock:  # requests in flight at once, from the request read to the answer sent
            self.script.in_flight += 1
            self.script.most_in_flight = max(self.script.most_in_flight, self.script.in_flight)
        arrived, status = time.monotonic(), 0
        try:
            status, answer, headers = respond(self.script, path, body, self.headers.get("Authorization", ""))
            if status == 0:  # the connection drops
                self.close_connection = True
                self.connection.close()
                return
            self._send(status, answer, headers)
        finally:
            with self.script.lock:
                self.script.in_flight -= 1
                self.script.arrivals.append((arrived, time.monotonic(), status))


def respond(
    script: Script, path: str, body: dict[str, Any], authorization: str = ""
) -> tuple[int, bytes, dict[str, str]]:
    """One completions or chat request's answer, (status, body, headers); status 0: the connection
    drops. The HTTP handler and the batch processor (Batches) both answer through it."""
    chat = path == "/v1/chat/completions"
    with script.lock:
        script.bodies.append((path.removeprefix("/v1"), copy.deepcopy(body)))
    if chat:
        body["prompt"] = body["messages"][-1]["content"]  # what the logs below record
        with script.lock:
            script.chat_requests.append(body)
        refused = [p for p in script.reject_params if p in body]
        if refused:
            message = f"Unsupported parameter: '{refused[0]}' is not supported with this model."
            return _refusal(message, refused[0], "unsupported_parameter")
        answer_format = body.get("response_format") or {}
        if script.strict_schemas and answer_format.get("type") == "json_schema":
            spec = answer_format.get("json_schema", {})
            problem = strict_schema_problem(spec.get("schema")) if spec.get("strict") else None
            if problem:
                name = spec.get("name")
                message = f"Invalid schema for response_format '{name}': {problem}"
                return _refusal(message, "response_format", "invalid_json_schema")
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
            return _answer(429, json.dumps({"error": error}).encode(), headers)
        limits = admitted
    with script.lock:
        script.received.append(body.get("prompt", ""))
    fault = script.draw_fault()
    if fault == "429":
        return _answer(429, b'{"error": {"message": "slow down"}}', {"Retry-After": str(script.retry_after)})
    if fault == "401echo":  # a careless endpoint that echoes the key it was given
        echo = json.dumps({"error": {"message": f"bad key: {authorization}"}})
        return _answer(401, echo.encode())
    if fault == "400":
        return _answer(400, b'{"error": {"message": "bad request: context too long"}}')
    if fault == "500":
        return _answer(500, b'{"error": {"message": "internal error"}}')
    if fault == "drop":
        return 0, b"", {}
    if fault == "malformed":
        return _answer(200, b'{"choices": [{"text": ')
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
            return _answer(500, b'{"error": {"message": "logprobs is not supported"}}')
        answer = _chat(script, body, fault, n, seed, pair)
        if script.limited:
            limits = script.spend(answer["usage"]["total_tokens"])
        return _answer(200, json.dumps(answer).encode(), limits)
    pair = script.label_pair(prompt, bool(body.get("logprobs")))
    if pair and body.get("logprobs") and script.logprobs == "refuse":
        message = "logprobs is not supported for models created with logits_all=False"
        return _answer(
            500, json.dumps({"error": {"message": message, "type": "internal_server_error"}}).encode()
        )
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
        cap = body.get("max_tokens", 16)
        again = "Task:" in prompt and prompt.endswith("\n") and body.get("temperature", 1.0) > 0
        if again and script.again_cap is not None:
            cap = min(cap, script.again_cap)
        text, reason = finish(raw, body.get("stop"), cap)
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
    return 200, json.dumps(response).encode(), limits


def _answer(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    return status, body, headers or {}


def _refusal(message: str, param: str, code: str) -> tuple[int, bytes, dict[str, str]]:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return _answer(400, json.dumps({"error": error}).encode())


def _chat(
    script: Script,
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
        if fault == "garbage" or script.garbage_for(body["prompt"]):
            raw = "".join(random.Random(i).choice("#@!?~ \n") for _ in range(40))
        elif pair and not structured:
            raw = "Yes" if pair[0] >= pair[1] else "No"
            if body.get("logprobs") and script.logprobs == "top":
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
    script.count_tokens(prompt_tokens, completion_tokens)
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


class Batches:
    """OpenAI's Files and Batch APIs as batch mode uses them: upload a JSONL input file, create a batch
    from it, read it (each read moves it on: validating, in_progress, finalizing, its end), list,
    cancel, and download its output and error files. Each line is answered by `respond`, with the
    script's faults: a line answered with an error goes to the error file."""

    ENDS = ("completed", "failed", "expired", "cancelled")

    def __init__(self, script: Script):
        self.script = script
        self.files: dict[str, dict[str, Any]] = {}  # id -> OpenAIFile, with its "content" (bytes)
        self.batches: dict[str, dict[str, Any]] = {}  # id -> Batch, with its "reads"
        self.created: list[str] = []  # batch ids in creation order
        self.lock = threading.Lock()

    def _held(self, kind: str) -> None:
        seconds = self.script.hold.pop(kind, 0.0)
        if seconds:
            self.script.holding.set()
            time.sleep(seconds)

    def _lost(self, kind: str) -> bool:
        with self.script.lock:
            if self.script.lose.get(kind, 0) > 0:
                self.script.lose[kind] -= 1
                return True
        return False

    def _file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:06d}"
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "content": content,
        }
        return self.files[file_id]

    @staticmethod
    def _public(record: dict[str, Any]) -> dict[str, Any]:
        # what is not there yet is left out, as OpenAI does (the description makes none of it nullable)
        hidden = ("content", "reads", "outcome", "cancel_reads")
        return {k: v for k, v in record.items() if k not in hidden and v is not None}

    def post(self, path: str, raw: bytes, content_type: str) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/files":
            fields = _multipart(raw, content_type)
            with self.script.lock:
                # the file's part stands for itself by its name (a multipart body has no JSON form)
                form = {k: v for k, v in fields.items() if k not in ("file", "filename")}
                self.script.bodies.append(("/files", {**form, "file": fields.get("filename", "")}))
            if fields.get("purpose") != "batch" or "file" not in fields:
                return _refusal("purpose must be batch, with a file", "purpose", "invalid_value")
            with self.lock:
                record = self._file(fields["filename"], "batch", fields["file"])
            self._held("files")
            if self._lost("files"):
                return 0, b"", {}
            return 200, json.dumps(self._public(record)).encode(), {}
        if path == "/v1/batches":
            body = json.loads(raw or b"{}")
            with self.script.lock:
                self.script.bodies.append(("/batches", copy.deepcopy(body)))
            if body.get("input_file_id") not in self.files:
                return _refusal("no such input file", "input_file_id", "invalid_value")
            with self.lock:
                batch_id = f"batch_{len(self.batches) + 1:06d}"
                outcomes = self.script.batch_outcomes
                self.batches[batch_id] = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": body["endpoint"],
                    "errors": None,
                    "input_file_id": body["input_file_id"],
                    "completion_window": body["completion_window"],
                    "status": "validating",
                    "output_file_id": None,
                    "error_file_id": None,
                    "created_at": int(time.time()),
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                    "metadata": body.get("metadata"),
                    "reads": 0,
                    "outcome": outcomes.pop(0) if outcomes else "completed",
                }
                self.created.append(batch_id)
                answer = self._public(self.batches[batch_id])
            self._held("batches")
            if self._lost("batches"):
                return 0, b"", {}
            return 200, json.dumps(answer).encode(), {}
        match = re.fullmatch(r"/v1/batches/([\w-]+)/cancel", path)
        if match and match.group(1) in self.batches:
            with self.lock:
                batch = self.batches[match.group(1)]
                if batch["status"] not in self.ENDS:
                    batch["status"], batch["outcome"] = "cancelling", "cancelled"
                    batch["cancelling_at"] = int(time.time())
                answer = self._public(batch)
            return 200, json.dumps(answer).encode(), {}
        return 404, b'{"error": {"message": "not found"}}', {}

    def get(self, url: str) -> tuple[int, bytes, dict[str, str]]:
        parsed = urllib.parse.urlsplit(url)
        path, query = parsed.path.rstrip("/"), dict(urllib.parse.parse_qsl(parsed.query))
        with self.lock:
            if path == "/v1/files":
                data = [
                    self._public(f)
                    for f in self.files.values()
                    if f["purpose"] == query.get("purpose", f["purpose"])
                ]
                return 200, json.dumps({"object": "list", "data": data, "has_more": False}).encode(), {}
            if path == "/v1/batches":  # newest first, as OpenAI lists them
                ids = self.created[::-1]
                if "after" in query and query["after"] in ids:
                    ids = ids[ids.index(query["after"]) + 1 :]
                page = ids[: int(query.get("limit", 20))]
                data = [self._public(self.batches[i]) for i in page]
                answer = {
                    "object": "list",
                    "data": data,
                    "first_id": page[0] if page else None,
                    "last_id": page[-1] if page else None,
                    "has_more": len(ids) > len(page),
                }
                return 200, json.dumps(answer).encode(), {}
            if (match := re.fullmatch(r"/v1/files/([\w-]+)/content", path)) and match.group(1) in self.files:
                return 200, self.files[match.group(1)]["content"], {}
            if (match := re.fullmatch(r"/v1/batches/([\w-]+)", path)) and match.group(1) in self.batches:
                batch = self.batches[match.group(1)]
                self._advance(batch)
                return 200, json.dumps(self._public(batch)).encode(), {}
        return 404, b'{"error": {"message": "not found"}}', {}

    def _advance(self, batch: dict[str, Any]) -> None:
        if batch["status"] in self.ENDS:
            return
        batch["reads"] += 1
        now = int(time.time())
        if batch["status"] == "cancelling":
            batch["cancel_reads"] = batch.get("cancel_reads", 0) + 1
            if batch["cancel_reads"] >= self.script.cancel_reads:
                self._finish(batch, "cancelled")
        elif batch["reads"] >= self.script.batch_polls:
            self._finish(batch, batch["outcome"])
        elif batch["status"] == "validating":
            batch.update(status="in_progress", in_progress_at=now)
        elif batch["reads"] == self.script.batch_polls - 1:
            batch.update(status="finalizing", finalizing_at=now)

    def _finish(self, batch: dict[str, Any], outcome: str) -> None:
        lines = [
            json.loads(line) for line in self.files[batch["input_file_id"]]["content"].splitlines() if line
        ]
        count = len(lines) if outcome == "completed" else int(len(lines) * self.script.batch_partial)
        done, failed = [], []
        for line in lines[:count]:
            status, raw, _ = respond(self.script, line["url"], line["body"])
            try:
                answer = json.loads(raw) if status == 200 else {}
            except ValueError:
                status, raw = 500, b'{"error": {"message": "malformed"}}'
            response = {"status_code": status, "request_id": f"req-{len(done) + len(failed)}"}
            if status == 200:
                done.append(
                    {
                        "id": f"batch_req_{len(done)}",
                        "custom_id": line["custom_id"],
                        "response": {**response, "body": answer},
                        "error": None,
                    }
                )
            else:
                body = json.loads(raw) if raw.startswith(b"{") else {"error": {"message": "dropped"}}
                failed.append(
                    {
                        "id": f"batch_req_e{len(failed)}",
                        "custom_id": line["custom_id"],
                        "response": {**response, "status_code": status or 500, "body": body},
                        "error": None,
                    }
                )
        for kind, found in (("output_file_id", done), ("error_file_id", failed)):
            if found:
                content = "".join(json.dumps(line) + "\n" for line in found).encode()
                batch[kind] = self._file(f"{batch['id']}_{kind}.jsonl", "batch_output", content)["id"]
        batch["request_counts"] = {"total": len(lines), "completed": len(done), "failed": len(failed)}
        batch.update(status=outcome, **{f"{outcome}_at": int(time.time())})
        if outcome == "failed":
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "scripted", "message": "the script failed it"}],
            }


def _multipart(raw: bytes, content_type: str) -> dict[str, Any]:
    """A multipart/form-data body's fields (a file field's bytes, and its name as "filename")."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    out: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if part.get_filename():
            out["filename"] = part.get_filename()
            out[str(name)] = payload
        else:
            out[str(name)] = payload.decode() if isinstance(payload, bytes) else payload
    return out


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
