"""An ordered sliding window of requests: many in flight, results handled strictly by index."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Item:
    """One index of a window, as its requests see it (`current_item`): how many it has asked so far."""

    requests: int = 0


# The window item the current request belongs to (None outside a window): a transport that queues
# requests (spread.py) serves an item's later ones (a follow-up asked once the first answer is in)
# before new items', since the window hands results over in index order.
current_item: ContextVar[Item | None] = ContextVar("window_item", default=None)


@dataclass
class Leftover:
    """What a stopped window did not hand over: finished results and requests cancelled in flight."""

    finished: list[Any] = field(default_factory=list)
    cancelled: int = 0


async def ordered(
    first: int,
    build: Callable[[int], Awaitable[Any] | None],
    handle: Callable[[int, Any], bool],
    concurrency: int,
    lag: int,
) -> Leftover:
    """Run build(i) for i = first, first+1, ... and hand each result to handle(i, result) in index order.

    At most `concurrency` requests are in flight, and request i starts only once every index below
    i - lag + 1 has been handled, so what build(i) sees does not depend on response timing.
    build() returns None when nothing should be sent now; the window ends when nothing is in flight
    and build() declines. handle() returns True to stop: what is still in flight is cancelled and
    returned as leftovers. An exception from a request cancels the rest and propagates.
    """
    pending: dict[int, asyncio.Future[Any]] = {}
    ready: dict[int, Any] = {}
    next_send = next_handle = first
    try:
        while True:
            while len(pending) < concurrency and next_send < next_handle + lag:
                request = build(next_send)
                if request is None:
                    break
                token = current_item.set(Item())  # the task runs in a copy of this context
                pending[next_send] = asyncio.ensure_future(request)
                current_item.reset(token)
                next_send += 1
            if not pending:
                return Leftover()
            await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
            for index in [i for i, f in pending.items() if f.done()]:
                ready[index] = pending.pop(index).result()
            while next_handle in ready:
                if handle(next_handle, ready.pop(next_handle)):
                    return Leftover(list(ready.values()), len(pending))
                next_handle += 1
    finally:
        if pending:
            for future in pending.values():
                future.cancel()
            await asyncio.gather(*pending.values(), return_exceptions=True)
