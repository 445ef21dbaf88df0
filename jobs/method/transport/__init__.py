"""How a run's requests reach an endpoint: the one interface the stages use.

`connect` gives the LLM for an endpoint: requests sent one by one with retries, pacing and accounting
(client.py, rate_limits.py, usage.py), or, for a batch-mode endpoint, collected and sent through the
provider's Batch API (batch.py). A stage builds its requests the same way for both and hands them to
`ordered` (window.py), which keeps as many in flight as the transport takes and hands the answers back
in order. Online requests wait their turn at a Gate (gate.py) where limits are shared with other runs,
and, given a Board, are spread over every worker that helps the run (spread.py).
Nothing else of this package is for callers: they never ask which transport they got.
"""

from __future__ import annotations

from jobs.method.endpoint import Endpoint
from jobs.method.transport.batch import BatchBook, BatchLLM, Waiting, cancel, open_batches, refresh, settle
from jobs.method.transport.client import LLM, Completion, EndpointError, Prompt
from jobs.method.transport.embeddings import Embedder
from jobs.method.transport.gate import Gate, OpenGate, Outcome, Passage, pause_after
from jobs.method.transport.spread import Board, SpreadLLM, send
from jobs.method.transport.usage import Usage
from jobs.method.transport.window import Leftover, ordered

__all__ = [
    "LLM",
    "BatchBook",
    "Board",
    "Completion",
    "Embedder",
    "EndpointError",
    "Gate",
    "Leftover",
    "OpenGate",
    "Outcome",
    "Passage",
    "Prompt",
    "Usage",
    "Waiting",
    "cancel",
    "connect",
    "open_batches",
    "ordered",
    "pause_after",
    "refresh",
    "send",
    "settle",
]


def connect(
    endpoint: Endpoint,
    concurrency: int,
    usage: Usage,
    book: BatchBook | None = None,
    gate: Gate | None = None,
    board: Board | None = None,
) -> LLM:
    """The LLM for `endpoint` in its mode: online with at most `concurrency` requests in flight, each
    waiting its turn at `gate` (limits shared with other runs; default none), spread over the workers
    that help the run through `board` when given (`concurrency` on each); or through the Batch API
    with its batches kept in `book` (a batch-mode endpoint needs one)."""
    if endpoint.mode == "batch":
        if book is None:
            raise ValueError("a batch-mode endpoint keeps its batches in a run's BatchBook")
        return BatchLLM(endpoint, usage, book)
    if board is not None:
        return SpreadLLM(endpoint, concurrency, usage, gate, board)
    return LLM(endpoint, concurrency, usage, gate)
