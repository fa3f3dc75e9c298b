"""inference/batching.py: opportunistic batching, without Ray. Batch shapes are decided by
gates the test opens, never by sleeps or clocks."""

import asyncio

import pytest

from service.inference.batching import Batcher, QueueFull, approx_tokens


class Gated:
    """A batch runner that records each batch and finishes it only when the test says so."""

    def __init__(self, fail_on: str | None = None):
        self.fail_on = fail_on
        self.batches: list[tuple[object, list]] = []
        self.started = asyncio.Event()
        self._gates: list[asyncio.Event] = []

    async def __call__(self, key, batch):
        items = [p.item for p in batch]
        self.batches.append((key, items))
        gate = asyncio.Event()
        self._gates.append(gate)
        self.started.set()
        await gate.wait()
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [f"{key}:{item}" for item in items]

    async def running(self, n: int) -> None:
        """Wait until n batches have started."""
        while len(self.batches) < n:
            self.started.clear()
            await self.started.wait()

    def finish(self, i: int) -> None:
        self._gates[i].set()

    async def drain(self, n: int) -> None:
        """Finish batches one after another until n have run."""
        for i in range(n):
            await self.running(i + 1)
            self.finish(i)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0)


def test_a_request_on_an_idle_batcher_runs_at_once_and_alone():
    async def main():
        runner = Gated()
        b = Batcher(runner, max_tokens=100)
        task = asyncio.create_task(b.submit("m", "a", 1))
        await runner.running(1)  # started without waiting for company or a clock
        runner.finish(0)
        return await task, runner.batches

    assert run(main()) == ("m:a", [("m", ["a"])])


def test_requests_arriving_during_a_batch_form_the_next_one():
    async def main():
        runner = Gated()
        b = Batcher(runner, max_tokens=100)
        first = asyncio.create_task(b.submit("m", "a", 1))
        await runner.running(1)
        rest = [asyncio.create_task(b.submit("m", x, 1)) for x in "bcd"]
        await _until(lambda: len(b._queue) == 3)
        runner.finish(0)
        await runner.running(2)
        runner.finish(1)
        return await asyncio.gather(first, *rest), runner.batches

    results, batches = run(main())
    assert results == ["m:a", "m:b", "m:c", "m:d"]
    assert batches == [("m", ["a"]), ("m", ["b", "c", "d"])]


def test_batches_hold_one_key_and_keep_the_order_of_the_others():
    async def main():
        runner = Gated()
        b = Batcher(runner, max_tokens=100)
        first = asyncio.create_task(b.submit("x", "0", 1))
        await runner.running(1)
        later = [
            asyncio.create_task(b.submit(k, i, 1))
            for k, i in [("m", "1"), ("n", "2"), ("m", "3"), ("n", "4")]
        ]
        await _until(lambda: len(b._queue) == 4)
        await runner.drain(3)
        return await asyncio.gather(first, *later), runner.batches

    out, batches = run(main())
    assert out == ["x:0", "m:1", "n:2", "m:3", "n:4"]
    assert batches == [("x", ["0"]), ("m", ["1", "3"]), ("n", ["2", "4"])]


def test_the_token_budget_bounds_a_batch_but_one_big_request_still_runs():
    async def main():
        runner = Gated()
        b = Batcher(runner, max_tokens=10)
        first = asyncio.create_task(b.submit("m", "big", 50))
        await runner.running(1)
        rest = [asyncio.create_task(b.submit("m", x, 4)) for x in "abcd"]
        await _until(lambda: len(b._queue) == 4)
        await runner.drain(3)
        await asyncio.gather(first, *rest)
        return runner.batches

    assert run(main()) == [("m", ["big"]), ("m", ["a", "b"]), ("m", ["c", "d"])]


def test_an_error_fails_only_its_request_and_the_batcher_carries_on():
    async def main():
        runner = Gated(fail_on="b")
        b = Batcher(runner, max_tokens=100)
        first = asyncio.create_task(b.submit("m", "a", 1))
        await runner.running(1)
        second = [asyncio.create_task(b.submit("m", x, 1)) for x in "bc"]
        await _until(lambda: len(b._queue) == 2)
        await runner.drain(4)  # a; b and c together (fails); then b alone, c alone
        results = await asyncio.gather(first, *second, return_exceptions=True)
        after = asyncio.create_task(b.submit("m", "d", 1))
        await runner.running(5)
        runner.finish(4)
        return results, await after, runner.batches

    results, after, batches = run(main())
    assert results[0] == "m:a" and results[2] == "m:c"
    assert isinstance(results[1], ValueError) and "bad item b" in str(results[1])
    assert batches == [("m", ["a"]), ("m", ["b", "c"]), ("m", ["b"]), ("m", ["c"]), ("m", ["d"])]
    assert after == "m:d"


def test_a_caller_that_goes_away_is_dropped_from_its_batch():
    async def main():
        runner = Gated()
        b = Batcher(runner, max_tokens=100)
        first = asyncio.create_task(b.submit("m", "a", 1))
        await runner.running(1)
        gone = asyncio.create_task(b.submit("m", "b", 1))
        kept = asyncio.create_task(b.submit("m", "c", 1))
        await _until(lambda: len(b._queue) == 2)
        gone.cancel()
        await asyncio.sleep(0)
        runner.finish(0)
        await runner.running(2)
        runner.finish(1)
        await asyncio.gather(first, kept)
        with pytest.raises(asyncio.CancelledError):
            await gone
        return runner.batches

    assert run(main()) == [("m", ["a"]), ("m", ["c"])]


def test_with_concurrency_two_batches_run_at_once_and_the_rest_wait_together():
    async def main():
        runner = Gated()
        b = Batcher(runner, max_tokens=100, concurrency=2)
        first = asyncio.create_task(b.submit("m", "a", 1))
        await runner.running(1)
        second = asyncio.create_task(b.submit("m", "b", 1))
        await runner.running(2)  # both run at once
        rest = [asyncio.create_task(b.submit("m", x, 1)) for x in "cde"]
        await _until(lambda: len(b._queue) == 3)
        runner.finish(0)
        await runner.running(3)
        runner.finish(1)
        runner.finish(2)
        await asyncio.gather(first, second, *rest)
        return runner.batches

    assert run(main()) == [("m", ["a"]), ("m", ["b"]), ("m", ["c", "d", "e"])]


def test_a_full_queue_refuses_at_once():
    async def main():
        runner = Gated()
        b = Batcher(runner, max_tokens=100, max_queued=2)
        running = asyncio.create_task(b.submit("m", "a", 1))
        await runner.running(1)
        waiting = [asyncio.create_task(b.submit("m", x, 1)) for x in "bc"]
        await _until(lambda: len(b._queue) == 2)
        with pytest.raises(QueueFull):
            await b.submit("m", "d", 1)
        runner.finish(0)
        await runner.running(2)
        runner.finish(1)
        return await asyncio.gather(running, *waiting)

    assert run(main()) == ["m:a", "m:b", "m:c"]


def test_a_batch_window_lets_an_idle_batcher_wait_for_company():
    async def main():
        runner = Gated()
        # a window long enough that the second request always arrives inside it
        b = Batcher(runner, max_tokens=100, wait_s=5.0)
        tasks = [asyncio.create_task(b.submit("m", x, 1)) for x in "ab"]
        await _until(lambda: len(b._queue) == 2)
        assert runner.batches == []  # nothing runs before the window closes
        b._scheduled_kick()  # close the window now rather than wait 5 s
        await runner.running(1)
        runner.finish(0)
        await asyncio.gather(*tasks)
        return runner.batches

    assert run(main()) == [("m", ["a", "b"])]


def test_token_estimates_cap_each_text():
    assert approx_tokens(["abcd" * 10, "x" * 100_000], max_tokens=50) == 12 + 50


def test_a_failing_batch_fails_only_the_request_that_broke_it():
    """Whatever a batch raises (a tokenizer's panic is a BaseException, not an Exception),
    every caller is answered: the batch runs again one request at a time, so the others get
    their results and only the culprit its error."""

    class Panic(BaseException):
        pass

    async def run(key, batch):
        if any(p.item == "bad" for p in batch):
            raise Panic("the tokenizer gave up")
        return [f"{key}:{p.item}" for p in batch]

    async def main():
        gate = asyncio.Event()

        async def slow(key, batch):
            await gate.wait()
            return await run(key, batch)

        b = Batcher(slow, max_tokens=100)
        first = asyncio.create_task(b.submit("m", "a", 1))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(b.submit("m", x, 1)) for x in ("b", "bad", "c")]
        await _until(lambda: len(b._queue) == 3)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = run_(main())
    assert results[:2] == ["m:a", "m:b"] and results[3] == "m:c"
    assert isinstance(results[2], RuntimeError) and "Panic: the tokenizer gave up" in str(
        results[2]
    )


run_ = run
