"""service.batching.Batcher: opportunistic batching, without Ray."""

import asyncio

import pytest

from service.batching import Batcher


class Recorder:
    """A batch runner that records each batch and takes `seconds` to run it."""

    def __init__(self, seconds: float = 0.02, fail_on: str | None = None):
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[tuple[object, list]] = []

    async def __call__(self, key, batch):
        items = [p.item for p in batch]
        self.batches.append((key, items))
        await asyncio.sleep(self.seconds)
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [f"{key}:{item}" for item in items]


def run(coro):
    return asyncio.run(coro)


def test_a_request_on_an_idle_batcher_runs_at_once_and_alone():
    async def main():
        rec = Recorder(seconds=0.0)
        b = Batcher(rec, max_tokens=100)
        loop = asyncio.get_running_loop()
        t = loop.time()
        assert await b.submit("m", "a", 1) == "m:a"
        return loop.time() - t, rec.batches

    elapsed, batches = run(main())
    assert batches == [("m", ["a"])]
    assert elapsed < 0.05  # no batch window: nothing waited for company


def test_requests_arriving_during_a_batch_form_the_next_one():
    async def main():
        rec = Recorder(seconds=0.05)
        b = Batcher(rec, max_tokens=100)
        first = asyncio.create_task(b.submit("m", "a", 1))
        await asyncio.sleep(0.01)  # "a" is running now
        rest = [asyncio.create_task(b.submit("m", x, 1)) for x in "bcd"]
        return await asyncio.gather(first, *rest), rec.batches

    results, batches = run(main())
    assert results == ["m:a", "m:b", "m:c", "m:d"]
    assert batches == [("m", ["a"]), ("m", ["b", "c", "d"])]


def test_batches_hold_one_key_and_keep_the_order_of_the_others():
    async def main():
        rec = Recorder(seconds=0.03)
        b = Batcher(rec, max_tokens=100)
        first = asyncio.create_task(b.submit("x", "0", 1))
        await asyncio.sleep(0.01)
        later = [
            asyncio.create_task(b.submit(k, i, 1))
            for k, i in [("m", "1"), ("n", "2"), ("m", "3"), ("n", "4")]
        ]
        out = await asyncio.gather(first, *later)
        return out, rec.batches

    out, batches = run(main())
    assert out == ["x:0", "m:1", "n:2", "m:3", "n:4"]
    assert batches == [("x", ["0"]), ("m", ["1", "3"]), ("n", ["2", "4"])]


def test_the_token_budget_bounds_a_batch_but_one_big_request_still_runs():
    async def main():
        rec = Recorder(seconds=0.03)
        b = Batcher(rec, max_tokens=10)
        first = asyncio.create_task(b.submit("m", "big", 50))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(b.submit("m", x, 4)) for x in "abcd"]
        await asyncio.gather(first, *rest)
        return rec.batches

    assert run(main()) == [("m", ["big"]), ("m", ["a", "b"]), ("m", ["c", "d"])]


def test_an_error_reaches_every_caller_of_its_batch_and_the_batcher_carries_on():
    async def main():
        rec = Recorder(seconds=0.03, fail_on="b")
        b = Batcher(rec, max_tokens=100)
        first = asyncio.create_task(b.submit("m", "a", 1))
        await asyncio.sleep(0.01)
        second = [asyncio.create_task(b.submit("m", x, 1)) for x in "bc"]
        results = await asyncio.gather(first, *second, return_exceptions=True)
        after = await b.submit("m", "d", 1)
        return results, after

    results, after = run(main())
    assert results[0] == "m:a"
    assert all(isinstance(r, ValueError) and "bad item b" in str(r) for r in results[1:])
    assert after == "m:d"


def test_a_caller_that_goes_away_is_dropped_from_its_batch():
    async def main():
        rec = Recorder(seconds=0.03)
        b = Batcher(rec, max_tokens=100)
        first = asyncio.create_task(b.submit("m", "a", 1))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(b.submit("m", "b", 1))
        kept = asyncio.create_task(b.submit("m", "c", 1))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(first, kept)
        with pytest.raises(asyncio.CancelledError):
            await gone
        return rec.batches

    assert run(main()) == [("m", ["a"]), ("m", ["c"])]


def test_with_concurrency_two_batches_run_at_once_and_the_rest_wait_together():
    async def main():
        rec = Recorder(seconds=0.05)
        b = Batcher(rec, max_tokens=100, concurrency=2)
        first = [asyncio.create_task(b.submit("m", x, 1)) for x in "a"]
        await asyncio.sleep(0)
        second = [asyncio.create_task(b.submit("m", x, 1)) for x in "b"]
        await asyncio.sleep(0.01)  # both run now
        rest = [asyncio.create_task(b.submit("m", x, 1)) for x in "cde"]
        await asyncio.gather(*first, *second, *rest)
        return rec.batches

    assert run(main()) == [("m", ["a"]), ("m", ["b"]), ("m", ["c", "d", "e"])]


def test_a_full_queue_refuses_at_once():
    from service.batching import QueueFull

    async def main():
        b = Batcher(Recorder(seconds=0.05), max_tokens=100, max_queued=2)
        running = asyncio.create_task(b.submit("m", "a", 1))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(b.submit("m", x, 1)) for x in "bc"]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit("m", "d", 1)
        return await asyncio.gather(running, *waiting)

    assert run(main()) == ["m:a", "m:b", "m:c"]


def test_a_batch_window_lets_an_idle_batcher_wait_for_company():
    async def main():
        rec = Recorder(seconds=0.0)
        b = Batcher(rec, max_tokens=100, wait_s=0.03)
        tasks = [asyncio.create_task(b.submit("m", "a", 1))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(b.submit("m", "b", 1)))
        await asyncio.gather(*tasks)
        return rec.batches

    assert run(main()) == [("m", ["a", "b"])]
