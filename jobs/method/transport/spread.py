"""Requests spread over many workers: one run's requests answered by every worker that helps it.

A run that spreads posts each request on a Board (jobs.store.board, in Redis) instead of sending it,
and waits for its answer there. Senders take requests off the board, send them to the endpoint and
post the answers back: the run's own process always runs some (so a run with no helper still
finishes), and helpers on other workers run more (jobs.runner.helpers), each for a bounded turn. The
run hands the answers to its stage in prompt order, as it would its own (window.py), so the dataset
does not depend on how many workers answered, or which.

A sender holds a lease on what it took and renews it while the request is out; a sender killed
mid-request stops renewing, and its request goes back on the board. A request is keyed by what it
asks (prompt, decoding, seed), so a run that resumes after a crash finds the answers posted while it
was gone instead of asking again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

import structlog

from jobs.method.endpoint import Endpoint
from jobs.method.recipe import Decoding
from jobs.method.transport.client import LLM, Completion, EndpointError, Prompt
from jobs.method.transport.gate import Gate
from jobs.method.transport.usage import Usage
from jobs.method.transport.window import current_item

log = structlog.get_logger(__name__)
LEASE_SECONDS = 10.0  # a taken request goes back on the board once its sender has not renewed it this long
RENEW_SECONDS = 3.0
CHECK_SECONDS = 1.0  # how often a waiting run takes back expired leases and asks for helpers
RECOVER_SECONDS = 5.0  # a request waited for this long is looked for on the board (recover)
IDLE_POLL = 0.2  # the longest a sender with nothing to take sleeps before it looks again


class Board(Protocol):
    """Where a run's requests wait for a sender and their answers for the run."""

    workers: int  # how many workers' senders one run may keep busy (its own included)

    async def post(self, key: str, request: bytes, front: bool = False) -> bool:
        """Offer a request, after those waiting (`front`: before them); False when it is already on
        the board or answered."""
        ...

    async def withdraw(self, key: str) -> None:
        """The run no longer wants this answer: take the request off if no sender has it yet."""
        ...

    async def take(self, lease: float) -> tuple[str, bytes] | None:
        """The oldest request no sender holds, leased for `lease` seconds; None when there is none."""
        ...

    async def renew(self, keys: list[str], lease: float) -> None: ...

    async def answer(self, key: str, answer: bytes) -> None:
        """Post an answer (the first one posted for a key stands) and give the lease back."""
        ...

    async def answered(self, keys: list[str], wait: float) -> dict[str, bytes]:
        """Answers to these keys, removed from the board: those posted since the last call, waiting up
        to `wait` seconds for one."""
        ...

    async def maintain(self) -> int:
        """Put requests whose leases ran out back on the board; returns how many requests wait or are
        out."""
        ...

    async def recover(self, requests: dict[str, bytes]) -> int:
        """Post again those of these requests that are nowhere on the board (not waiting, out or
        answered); returns how many."""
        ...

    async def recruit(self, pending: int) -> int:
        """Ask for helpers for `pending` requests (the board decides how many, up to `workers`); returns
        how many helpers the run cannot have and its own process should stand in for (sending what they
        would)."""
        ...

    async def close(self) -> None:
        """The run is done with the board: its requests and answers go; helpers leave."""
        ...

    async def release(self) -> None:
        """Let go of the board, leaving it as it is."""
        ...


def request_key(prompt: Prompt, decoding: Decoding, seed: int, stage: str, extra: dict[str, Any]) -> str:
    what = json.dumps([stage, prompt, asdict(decoding), seed, extra], sort_keys=True, default=list)
    return hashlib.blake2b(what.encode(), digest_size=16).hexdigest()


class SpreadLLM(LLM):
    """An LLM whose requests go through a Board: answered by this process's `concurrency` senders and
    by helpers' (and by more of its own, standing in for helpers it cannot have). Counts what every
    sender spent on its requests in this run's usage."""

    def __init__(self, endpoint: Endpoint, concurrency: int, usage: Usage, gate: Gate | None, board: Board):
        super().__init__(endpoint, concurrency, usage, gate)
        self.board = board
        self._concurrency = concurrency
        self._waiting: dict[str, list[asyncio.Future[bytes]]] = {}
        self._posted: dict[str, tuple[float, bytes]] = {}  # waited-for requests: when posted, and what
        self._tasks: list[asyncio.Task[Any]] = []
        self._senders: list[LLM] = []
        self._failed: BaseException | None = None
        self._closing = False
        self._posting = asyncio.Lock()  # fair: its waiters go in the order they came
        self._granted = concurrency  # how many of the senders take requests (see _grant)

    def capacity(self, concurrency: int) -> int:
        return concurrency * self.board.workers

    def _start(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._tasks:
            return
        self._tasks.append(asyncio.ensure_future(self._dispatch()))
        self._tasks[-1].add_done_callback(self._ended)
        self._grant(self._concurrency)

    def _grant(self, count: int) -> None:
        """Let `count` of this process's senders take requests: more start when there are fewer; those
        past `count` pause between requests until it grows again."""
        self._granted = count
        while len(self._senders) < count and not self._closing:
            self._senders.append(LLM(self.endpoint, 1, Usage(), self._gate))
            index = len(self._senders) - 1
            sender = send(
                self.board,
                self._senders[-1],
                lambda: self._closing,
                paused=lambda i=index: i >= self._granted,
            )
            self._tasks.append(asyncio.ensure_future(sender))
            self._tasks[-1].add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        """A sender or the dispatcher stopped before the run closed (an error: Redis gone past its
        retries, say; or a cancel from elsewhere): every request waiting fails, instead of waiting for
        an answer nobody will hand over."""
        if self._closing:
            return
        failed = None if task.cancelled() else task.exception()
        self._failed = failed or EndpointError("a sender of the run's requests stopped")
        for waiters in self._waiting.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(self._failed)  # type: ignore[arg-type]

    async def complete(
        self,
        prompt: Prompt,
        decoding: Decoding,
        seed: int,
        stage: str,
        schema: dict[str, Any] | None = None,
        **override: Any,
    ) -> list[Completion]:
        extra = {"schema": schema, **override}
        key = request_key(prompt, decoding, seed, stage, extra)
        self._start()
        # an item's second request (a follow-up) goes before other items': the window waits for it
        item = current_item.get()
        front = item is not None and item.requests > 0
        if item is not None:
            item.requests += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(key, [])
        waiters.append(future)
        try:
            if len(waiters) == 1:
                request: dict[str, Any] = {"prompt": prompt, "decoding": asdict(decoding), "seed": seed}
                request.update(stage=stage, **extra)
                self._posted[key] = (time.monotonic(), json.dumps(request).encode())
                async with self._posting:  # in the order asked: concurrent calls may overtake
                    await self.board.post(key, self._posted[key][1], front)
            raw = await future
        except asyncio.CancelledError:
            if future in waiters:
                waiters.remove(future)
            if not waiters and self._waiting.get(key) is waiters:
                del self._waiting[key]
                self._posted.pop(key, None)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.board.withdraw(key))
            raise
        answer = json.loads(raw)
        spent = answer["usage"]
        self.usage.merge(Usage.from_dict(spent))
        for name, why in spent.get("dropped", {}).items():
            self.usage.dropped.setdefault(name, why)
        if "error" in answer:
            raise EndpointError(answer["error"])
        return [Completion(**c) for c in answer["completions"]]

    async def _dispatch(self) -> None:
        """Hand answers to their requests; now and then take back expired leases and ask for helpers."""
        checked = 0.0
        while not self._closing:
            if time.monotonic() - checked >= CHECK_SECONDS:
                checked = time.monotonic()
                pending = await self.board.maintain()
                if pending:
                    stand_ins = await self.board.recruit(pending)
                    self._grant(self._concurrency * min(1 + stand_ins, self.board.workers))
                # a safety net: a request waited for this long that is nowhere on the board goes again
                old = {k: r for k, (at, r) in self._posted.items() if checked - at > RECOVER_SECONDS}
                if old and (again := await self.board.recover(old)):
                    log.warning("spread_requests_posted_again", requests=again)
            if not self._waiting:
                await asyncio.sleep(0.05)
                continue
            for key, raw in (await self.board.answered(list(self._waiting), 0.5)).items():
                self._posted.pop(key, None)
                for future in self._waiting.pop(key, []):
                    if not future.done():
                        future.set_result(raw)

    async def close(self, finished: bool = True) -> None:
        """Stop the senders and the dispatcher (the flag first: on Python 3.11 a cancel that lands as
        an await completes can be lost, asyncio.wait_for's known flaw), and drop the board if this
        run used it and is done. A run that stopped (a hand-back, a crash's cancel) leaves the answers
        still to come there for the run that resumes it, as does a resumed run with nothing left to do
        (answers posted meanwhile); the job's archiving drops what is left."""
        self._closing, used, pending = True, bool(self._tasks), set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        self._tasks = []
        for sender in self._senders:
            await sender.close()
        with contextlib.suppress(Exception):
            await (self.board.close() if used and finished else self.board.release())
        await super().close(finished)


async def send(
    board: Board,
    llm: LLM,
    stop: Callable[[], bool],
    idle: float | None = None,
    paused: Callable[[], bool] = lambda: False,
) -> int:
    """One sender: take a request off the board, send it through `llm` (concurrency 1, its own usage),
    post the answer with what it spent (or the error it ended in); until `stop()` says so or, with
    `idle`, nothing came to take for that many seconds; takes nothing while `paused()`. Returns how
    many requests it answered."""
    answered, quiet_since, poll = 0, time.monotonic(), 0.01
    while not stop():
        if paused():
            await asyncio.sleep(IDLE_POLL)
            continue
        item = await board.take(LEASE_SECONDS)
        if item is None:
            if idle is not None and time.monotonic() - quiet_since >= idle:
                break
            await asyncio.sleep(poll)
            poll = min(poll * 2, IDLE_POLL)
            continue
        key, raw = item
        request = json.loads(raw)
        request_stage = request.get("stage")
        renewing = asyncio.ensure_future(_renew(board, key))
        before = llm.usage.to_dict()
        try:
            completions = await llm.complete(
                request.pop("prompt"),
                Decoding(**{k: tuple(v) if k == "stop" else v for k, v in request.pop("decoding").items()}),
                request.pop("seed"),
                request.pop("stage"),
                **request,
            )
            answer: dict[str, Any] = {"completions": [asdict(c) for c in completions]}
        except EndpointError as error:
            answer = {"error": str(error)}
        except asyncio.CancelledError:  # the sender stops (its run closes): the request goes back
            renewing.cancel()  # first, so that no renewal under way outlasts this one
            await asyncio.gather(renewing, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.shield(board.renew([key], 0.0))
            raise
        except Exception as error:  # the run waiting for it fails with the reason
            log.exception("spread_request_failed")
            answer = {"error": f"internal error ({type(error).__name__}) answering a {request_stage} request"}
        finally:
            renewing.cancel()
        answer["usage"] = _spent(before, llm.usage.to_dict())
        await board.answer(key, json.dumps(answer).encode())
        answered, quiet_since, poll = answered + 1, time.monotonic(), 0.01
    return answered


async def _renew(board: Board, key: str) -> None:
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        with contextlib.suppress(Exception):  # a missed renewal only risks the request being sent twice
            await board.renew([key], LEASE_SECONDS)


def _spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What one request spent: the difference of a sender's usage before and after it."""
    out: dict[str, Any] = {}
    for name, value in after.items():
        if isinstance(value, dict) and name != "dropped":
            was = before[name]
            out[name] = {k: v - was.get(k, 0) for k, v in value.items() if v != was.get(k, 0)}
        elif name == "dropped":
            out[name] = {k: v for k, v in value.items() if k not in before[name]}
        else:
            out[name] = value - before[name]
    return out
