"""The ordered window: results handled by index whatever order they arrive in."""

import asyncio
import random

import pytest

from jobs.method.transport import ordered


def run(coro):
    return asyncio.run(coro)


def test_handles_in_index_order_with_out_of_order_completion():
    delays = [random.Random(i).random() / 50 for i in range(30)]
    handled, sent = [], []
    in_flight = {"now": 0, "max": 0}

    async def request(i):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(delays[i])
        in_flight["now"] -= 1
        return i * 10

    def build(i):
        if i >= 30:
            return None
        sent.append(i)
        return request(i)

    def handle(i, result):
        assert result == i * 10
        handled.append(i)
        return False

    leftover = run(ordered(0, build, handle, concurrency=4, lag=8))
    assert handled == list(range(30)) and sent == list(range(30))
    assert in_flight["max"] == 4
    assert leftover.finished == [] and leftover.cancelled == 0


def test_lag_bounds_what_a_request_can_see():
    handled: list[int] = []
    seen_when_built: dict[int, int] = {}

    async def request(i):
        await asyncio.sleep(0.001 * (i % 3))
        return i

    def build(i):
        if i >= 20:
            return None
        seen_when_built[i] = len(handled)
        return request(i)

    def handle(i, result):
        handled.append(i)
        return False

    run(ordered(0, build, handle, concurrency=10, lag=3))
    # request i is built only after every index below i - lag + 1 was handled
    assert all(seen >= i - 3 + 1 for i, seen in seen_when_built.items())


def test_stop_cancels_what_is_in_flight():
    cancelled = []

    async def request(i):
        try:
            await asyncio.sleep(0 if i < 3 else 10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    leftover = run(ordered(0, lambda i: request(i), lambda i, r: i == 2, concurrency=5, lag=5))
    assert sorted(cancelled) == [3, 4] and leftover.cancelled == 2


def test_an_error_propagates_and_cancels_the_rest():
    started, cancelled, finished, handled = [], [], [], []

    async def main():
        others_in_flight, never = asyncio.Event(), asyncio.Event()

        async def request(i):
            started.append(i)
            if {1, 3} <= set(started):
                others_in_flight.set()
            try:
                if i == 2:
                    await others_in_flight.wait()  # fails while 1 (before it) and 3 (after it) are out
                    raise RuntimeError("boom")
                if i != 0:
                    await never.wait()
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
            finished.append(i)
            return i

        def handle(i, result):
            handled.append(i)
            return False

        # build() would go on forever and request 1 never answers: only the error ends the window. The
        # timeout only keeps a window that waits instead of cancelling from hanging the test (unlike
        # wait_for, it runs the window in this task: no extra turn of the loop before the error is seen).
        with pytest.raises(RuntimeError, match="boom"):
            async with asyncio.timeout(10):
                await ordered(0, request, handle, concurrency=3, lag=10)
        # by the time the error reaches the caller, the others were cancelled and have wound down
        assert sorted(cancelled) == [1, 3]
        assert finished == handled == [0]
        assert started == [0, 1, 2, 3]  # 3 took the slot 0 left; nothing started after the error

    run(main())
