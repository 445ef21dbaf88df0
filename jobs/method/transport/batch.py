"""Batch mode: a stage's requests go through the provider's Batch API (OpenAI's `POST /v1/files` with
purpose `batch`, then `POST /v1/batches`), at its batch prices, instead of one by one.

BatchLLM is an LLM whose requests are collected, not sent. A stage builds them as it would online (all
of classification's and instance generation's, one round of stage 1's); once it waits for them, they
are answered from the outputs of the run's batches when those are all in. Otherwise they go out as a
batch (or, when they already have, the batches are polled) and the run stops with Waiting, everything
committed: the runner looks again later and the run resumes from its checkpoint, building the same
requests, with the same ids.

Nothing is submitted twice. Each step is recorded in the checkpoint before the next: the record, then
its input file's id, then the batch's. A run that died after an upload finds its file by name, one that
died after creating a batch finds the batch by its input file. A batch that expired, failed or was
cancelled keeps the answers it has; the rest go once more in the same round, then fail the run, as a
request fails online past its retries. So do answers that are errors: retried once when online would
retry them, a refused parameter dropped as online.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import openai
import structlog
from openai.types import Completion as CompletionBody
from openai.types.chat import ChatCompletion
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from jobs.method.checkpoint import BatchRecord
from jobs.method.endpoint import Endpoint
from jobs.method.recipe import Decoding
from jobs.method.transport.client import LLM, Completion, EndpointError, Prompt
from jobs.method.transport.usage import Usage

log = structlog.get_logger(__name__)

MAX_REQUESTS = 50_000  # OpenAI's limits for one batch's input file
MAX_BYTES = 200 * 1024 * 1024
ATTEMPTS = 2  # a request goes at most twice: once, and once more for what a batch left unanswered
CREATE_ATTEMPTS = 5  # an upload or a batch creation, as the SDK's own retries would try it
TERMINAL = ("completed", "failed", "expired", "cancelled")
COMPLETION_WINDOW = "24h"  # the only one OpenAI offers
# requests not sent yet, by custom id: (stage, request body, whether the reply is JSON-constrained)
Wanted = dict[str, tuple[str, dict[str, Any], bool]]


class Waiting(Exception):
    """The run's requests are with the provider: everything is committed; resume it `after` seconds
    from now or later (0: at once, e.g. to send again without a refused parameter)."""

    def __init__(self, batches: list[str], after: float | None = None):
        self.batches, self.after = batches, after
        super().__init__(f"waiting for batches {', '.join(batches) or '(none open)'}")


def digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def open_batches(records: list[BatchRecord]) -> list[str]:
    return [r["id"] for r in records if r["id"] and r["status"] not in TERMINAL]


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _client(endpoint: Endpoint) -> openai.AsyncOpenAI:
    # the SDK's own retries, with backoff: these calls are few and none costs tokens
    return openai.AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=endpoint.timeout, max_retries=4
    )


async def _refresh(client: openai.AsyncOpenAI, records: list[BatchRecord]) -> bool:
    changed = False
    for record in records:
        if record["id"] and record["status"] not in TERMINAL:
            batch = await client.batches.retrieve(record["id"])
            changed |= _update(record, batch)
    return changed


async def refresh(endpoint: Endpoint, records: list[BatchRecord]) -> bool:
    """Poll the open batches, updating their records in place; True when any changed."""
    async with _client(endpoint) as client:
        return await _refresh(client, records)


async def cancel(endpoint: Endpoint, records: list[BatchRecord]) -> list[str]:
    """Cancel the open batches (a cancelled job's) not cancelling already, then read their states into
    the records; the ids of those cancelled now."""
    out = []
    async with _client(endpoint) as client:
        for record in records:
            if record["id"] and record["status"] not in (*TERMINAL, "cancelling"):
                await client.batches.cancel(record["id"])
                out.append(record["id"])
        await _refresh(client, records)
    return out


async def settle(endpoint: Endpoint, usage: Usage, book: BatchBook) -> None:
    """Count what a stopped run's ended batches answered (a cancelled batch bills what it finished):
    each batch's output and error files are read once and their usage added (its record's `counted`),
    committed through the book."""
    llm = BatchLLM(endpoint, usage, book)
    try:
        await llm._lines([r for r in book.records if r["status"] in TERMINAL])
    finally:
        await llm.close()


def _update(record: BatchRecord, batch: Any) -> bool:
    before = (record["status"], record["output"], record["errors"])
    record["status"] = batch.status
    record["output"] = batch.output_file_id
    record["errors"] = batch.error_file_id
    return before != (record["status"], record["output"], record["errors"])


@dataclass
class BatchBook:
    """Where a run keeps its batches: `run_id` names its files; `records` (the current round's batches)
    and `totals` live in its checkpoint, which `commit` persists."""

    run_id: str
    records: list[BatchRecord]
    totals: dict[str, int]
    commit: Callable[[], None]


class BatchLLM(LLM):
    """An LLM whose requests go through the Batch API, kept in `book`."""

    def __init__(self, endpoint: Endpoint, usage: Usage, book: BatchBook):
        super().__init__(endpoint, 1, usage)
        self.run_id, self.records, self.totals, self._commit = (
            book.run_id,
            book.records,
            book.totals,
            book.commit,
        )
        self._wanted: Wanted = {}
        self._futures: dict[str, asyncio.Future[list[Completion]]] = {}
        self._flush: asyncio.Task[None] | None = None
        self._outputs: dict[str, dict[str, dict[str, Any]]] = {}  # file id -> custom id -> line
        # files and batches: the same connections as the completions client; reads with the SDK's
        # retries, creations without (_once retries them, looking first for what a lost answer made)
        self._batches = self._client.with_options(max_retries=4)
        self._creates = self._client.with_options(max_retries=0)

    def capacity(self, concurrency: int) -> int:
        return sys.maxsize  # a stage's requests are all built before one goes

    def complete(  # type: ignore[override]  # registers at once: a stage's requests are one batch
        self,
        prompt: Prompt,
        decoding: Decoding,
        seed: int,
        stage: str,
        schema: dict[str, Any] | None = None,
        **override: Any,
    ) -> Awaitable[list[Completion]]:
        params, n = self._plan(prompt, decoding, stage, schema, override)
        self._leave_out_for_reasoning(params)
        # one request per completion, each with its own seed (custom ids must be unique in a batch)
        futures = []
        for i in range(n):
            body: dict[str, Any] = {"model": self.endpoint.model}
            body["messages" if self.chat else "prompt"] = prompt
            body |= self._arguments(params, seed + i, 1)
            futures.append(self._want(f"{stage}-{seed + i}", stage, body, "response_format" in params))
        return _joined(futures)

    def _want(
        self, custom_id: str, stage: str, body: dict[str, Any], structured: bool
    ) -> asyncio.Future[list[Completion]]:
        if custom_id not in self._futures:
            self._wanted[custom_id] = (stage, body, structured)
            self._futures[custom_id] = asyncio.get_running_loop().create_future()
        if self._flush is None:  # after the builds in hand: they run without yielding to the loop
            self._flush = asyncio.ensure_future(self._flushed())
        return self._futures[custom_id]

    async def _flushed(self) -> None:
        await asyncio.sleep(0)
        wanted, futures = self._wanted, self._futures
        self._wanted, self._futures, self._flush = {}, {}, None
        try:
            try:
                answers = await self._answers(wanted)
            except openai.OpenAIError as exc:  # past the client's retries: the job fails, saying why
                raise self._failure(exc, "batch") from None
        except BaseException as exc:
            for future in futures.values():
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved: a stage stopped by it may not await them all
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for custom_id, future in futures.items():
            if not future.done():
                future.set_result(answers[custom_id])

    # --- a flush: answer from the outputs, or submit, or poll ---

    async def _answers(self, wanted: Wanted) -> dict[str, list[Completion]]:
        ids = list(wanted)
        if current := self.records:
            if unmade := [r for r in current if r["id"] is None]:  # a crash mid-submission: go on with it
                attempt = unmade[0]["attempt"]
                earlier = await self._lines([r for r in current if r["attempt"] < attempt])
                left = {c: w for c, w in wanted.items() if not _ok(earlier.get(c))}
                await self._submit(current[0]["round"], current[0]["digest"], attempt, left)
            if await _refresh(self._batches, current):
                self._commit()
            if waiting := open_batches(current):
                raise Waiting(waiting)
            lines = await self._lines(current)
            if all(_ok(lines.get(c)) for c in ids):
                return {c: self._completions(lines[c], wanted[c][0], wanted[c][2]) for c in ids}
            if current[0]["digest"] == digest(ids):  # this round again: what it left unanswered
                await self._retry(wanted, lines)
                raise Waiting(open_batches(current))
        # the next round: the one before was handled (its answers are in the checkpoint)
        rounds = self.totals.get("rounds", 0)
        self.records.clear()
        self.totals["rounds"] = rounds + 1  # committed with the first record: its files' names are unique
        await self._submit(rounds, digest(ids), 0, wanted)
        raise Waiting(open_batches(self.records))

    async def _retry(self, wanted: Wanted, lines: dict[str, Any]) -> None:
        """Send once more what the round's batches did not answer; fail the run past ATTEMPTS."""
        attempt = max(r["attempt"] for r in self.records) + 1
        left = {c: w for c, w in wanted.items() if not _ok(lines.get(c))}
        for custom_id in left:
            line = lines.get(custom_id)
            status, said = _error(line) if line else (None, "not answered before its batch ended")
            param = _param(line) if status == 400 else None
            if param and param in wanted[custom_id][1] and self._adapt(param, said):
                self._commit()  # a refused parameter: the requests are built again without it
                raise Waiting([], after=0)
            rebuilt = param is not None and param not in wanted[custom_id][1]  # goes again without it
            if attempt >= ATTEMPTS or (status is not None and not _retryable(status) and not rebuilt):
                stage = wanted[custom_id][0]
                kind = f" (HTTP {status})" if status else ""
                raise EndpointError(f"{stage} request {custom_id} failed in batch mode{kind}: {said}")
        self.usage.retries += len(left)
        await self._submit(self.records[0]["round"], self.records[0]["digest"], attempt, left)

    async def _submit(self, round_: int, round_digest: str, attempt: int, wanted: Wanted) -> None:
        """Upload and create the batches for these requests, each step recorded before the next."""
        url = "/v1/chat/completions" if self.chat else "/v1/completions"
        for part, lines in enumerate(_split(wanted, url)):
            record = next(
                (r for r in self.records if (r["round"], r["attempt"], r["part"]) == (round_, attempt, part)),
                None,
            )
            fresh = record is None  # else a crash may have left it half made: look before making
            if record is None:
                safe = self.run_id.replace("/", "-")
                record = BatchRecord(
                    round=round_,
                    digest=round_digest,
                    stage=wanted[json.loads(lines[0])["custom_id"]][0],
                    attempt=attempt,
                    part=part,
                    requests=len(lines),
                    filename=f"{safe}-r{round_}-a{attempt}-p{part}.jsonl",
                    file=None,
                    id=None,
                    status=None,
                    output=None,
                    errors=None,
                    counted=False,
                )
                self.records.append(record)
                self._commit()
            if record["file"] is None:
                record["file"] = (await self._upload(record, lines, look=not fresh)).id
                self._commit()
            if record["id"] is None:
                batch = await self._create(record, url, look=not fresh)
                record["id"] = batch.id
                _update(record, batch)
                self.totals["batches"] = self.totals.get("batches", 0) + 1
                self._commit()
                log.info("batch_created", batch=batch.id, round=round_, attempt=attempt, requests=len(lines))

    async def _upload(self, record: BatchRecord, lines: list[str], look: bool) -> Any:
        """The record's input file: the one a run that died after uploading it made (`look`), or
        uploaded now, once."""
        find = partial(_find_file, self._batches, record["filename"])
        if look and (found := await find()) is not None:
            return found
        content = (record["filename"], "".join(lines).encode())
        return await _once(partial(self._creates.files.create, file=content, purpose="batch"), find)

    async def _create(self, record: BatchRecord, url: str, look: bool) -> Any:
        """The record's batch: the one a run that died after creating it made (`look`), or created now,
        once."""
        find = partial(_find_batch, self._batches, str(record["file"]))
        if look and (found := await find()) is not None:
            return found
        create = partial(
            self._creates.batches.create,
            input_file_id=str(record["file"]),
            endpoint=url,
            completion_window=COMPLETION_WINDOW,
            metadata={
                "run": self.run_id[:512],
                "round": str(record["round"]),
                "attempt": str(record["attempt"]),
            },
        )
        return await _once(create, find)

    async def _lines(self, records: list[BatchRecord]) -> dict[str, dict[str, Any]]:
        """Every answer of the round's ended batches (a later attempt's over an earlier one's), by
        custom id; the usage of a batch's answers is counted once, committed with its record."""
        out: dict[str, dict[str, Any]] = {}
        for record in sorted(records, key=lambda r: r["attempt"]):
            mine: dict[str, dict[str, Any]] = {}
            for file_id in (record["errors"], record["output"]):  # answers over errors
                if file_id and file_id not in self._outputs:
                    text = (await self._batches.files.content(file_id)).text
                    self._outputs[file_id] = {
                        line["custom_id"]: line for line in map(json.loads, text.splitlines()) if line
                    }
                mine |= self._outputs.get(file_id or "", {})
            if not record["counted"]:
                self._count(record, mine)
            out |= {c: line for c, line in mine.items() if c not in out or _ok(line)}
        return out

    def _count(self, record: BatchRecord, lines: dict[str, dict[str, Any]]) -> None:
        for line in lines.values():
            if _ok(line):
                usage = line["response"]["body"].get("usage") or {}
                self.count(
                    record["stage"],
                    usage.get("prompt_tokens", 0) or 0,
                    usage.get("completion_tokens", 0) or 0,
                )
            else:
                status, _ = _error(line)
                self.usage.errors[str(status) if status else "batch"] += 1
        if unanswered := record["requests"] - len(lines):
            self.usage.errors[f"batch_{record['status']}"] += unanswered
        record["counted"] = True
        self._commit()

    def _completions(self, line: dict[str, Any], stage: str, structured: bool) -> list[Completion]:
        body = line["response"]["body"]
        try:
            response = (ChatCompletion if self.chat else CompletionBody).model_validate(body)
            return self._parse(response, stage, structured, count=False)
        except Exception as exc:  # a malformed answer fails the run, as past every retry online
            raise EndpointError(
                f"{stage} request {line['custom_id']} failed in batch mode (malformed): {exc}"
            ) from None


async def _joined(futures: list[asyncio.Future[list[Completion]]]) -> list[Completion]:
    return [c for f in futures for c in await f]


def _ok(line: dict[str, Any] | None) -> bool:
    response = (line or {}).get("response") or {}
    return response.get("status_code") == 200 and isinstance(response.get("body"), dict)


def _error(line: dict[str, Any]) -> tuple[int | None, str]:
    """An error line's HTTP status and what it said."""
    response = line.get("response") or {}
    error = line.get("error") or (response.get("body") or {}).get("error") or {}
    message = error.get("message") if isinstance(error, dict) else str(error)
    return response.get("status_code"), str(message or "no message")[:200]


def _param(line: dict[str, Any] | None) -> str | None:
    error = (((line or {}).get("response") or {}).get("body") or {}).get("error") or {}
    param = error.get("param") if isinstance(error, dict) else None
    return param if isinstance(param, str) and param else None


def _split(wanted: Wanted, url: str) -> list[list[str]]:
    """The requests as JSONL lines, in files of at most MAX_REQUESTS lines and MAX_BYTES."""
    parts: list[list[str]] = [[]]
    size = 0
    for custom_id, (_, body, _) in wanted.items():
        line = json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}) + "\n"
        if parts[-1] and (len(parts[-1]) >= MAX_REQUESTS or size + len(line.encode()) > MAX_BYTES):
            parts.append([])
            size = 0
        parts[-1].append(line)
        size += len(line.encode())
    return parts


def _lost(exc: BaseException) -> bool:
    """A creation whose answer may have been lost after the provider did the work: a dropped connection,
    a timeout, a server error. (A 4xx answer says it was not done.)"""
    if isinstance(exc, openai.APIStatusError):
        return _retryable(exc.status_code)
    return isinstance(exc, openai.APIConnectionError)


async def _once(create: Callable[[], Awaitable[Any]], find: Callable[[], Awaitable[Any]]) -> Any:
    """Create an upload or a batch once: when an attempt's answer is lost, look for what it made (the
    file by its name, the batch by its input file) before trying again, so that nothing is submitted,
    or paid for, twice."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(_lost),
        stop=stop_after_attempt(CREATE_ATTEMPTS),
        wait=wait_exponential_jitter(multiplier=0.5, max=8.0),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if attempt.retry_state.attempt_number > 1 and (made := await find()) is not None:
                return made
            return await create()
    raise AssertionError("unreachable")  # pragma: no cover


async def _find_file(client: openai.AsyncOpenAI, filename: str) -> Any:
    """An input file uploaded before its id reached the checkpoint (a crash, a lost answer)."""
    async for f in client.files.list(purpose="batch"):
        if f.filename == filename:
            return f
    return None


async def _find_batch(client: openai.AsyncOpenAI, file_id: str) -> Any:
    """A batch created before its id reached the checkpoint (a crash, a lost answer): the one with this
    input file."""
    async for batch in client.batches.list(limit=100):
        if batch.input_file_id == file_id:
            return batch
    return None
