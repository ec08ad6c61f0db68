"""asyncio: ``wait_range_async`` and ``aiter_ranges`` with the writer in another process.

Nothing sleeps to synchronise: the writer process writes when the test sets an event, and
"the event loop is not held" is shown by another coroutine running while the wait is parked.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
from typing import Any

import pytest

import shmstore
from shmstore import WaitOutcome

DATA = bytes(range(1, 256)) * 64


def _writer(name: str, go: Any, chunks: list[tuple[int, int]], commit: bool) -> None:
    w = shmstore.open(name, mode="r+")
    try:
        for s, e in chunks:
            assert go.wait(30)
            go.clear()
            w.write_at(s, DATA[s:e])
        if commit:
            assert go.wait(30)
            w.commit()
    finally:
        w.close()


def _wait_threads_gone() -> None:
    for t in threading.enumerate():
        if t.name == "shmstore-wait":
            t.join(10)
            assert not t.is_alive(), "a wait thread outlived its task"


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def ctx(request: pytest.FixtureRequest) -> Any:
    return mp.get_context(request.param)


@pytest.mark.timeout(60)
def test_wait_range_async_wakes_on_another_process_write_without_holding_the_loop(
        name: str, ctx: Any) -> None:
    owner = shmstore.create(name, capacity=1 << 16)
    go = ctx.Event()
    p = ctx.Process(target=_writer, args=(name, go, [(0, 4096)], False))
    p.start()
    r = shmstore.open(name)

    async def main() -> tuple[WaitOutcome, int]:
        ticks = 0
        wait = asyncio.create_task(r.wait_range_async(0, 4096, timeout=30))
        while ticks < 50:  # the loop keeps running other coroutines while the wait parks
            await asyncio.sleep(0)
            ticks += 1
        assert not wait.done()
        go.set()
        return await wait, ticks

    try:
        outcome, ticks = asyncio.run(main())
        assert outcome is WaitOutcome.READY and ticks == 50
        assert r.read(0, 4096) == DATA[:4096]
        p.join(30)
        assert p.exitcode == 0
    finally:
        r.close()
        owner.unlink()
        owner.close()
    _wait_threads_gone()


@pytest.mark.timeout(60)
def test_covered_bytes_return_without_a_thread(name: str) -> None:
    with shmstore.create(name, capacity=1 << 16) as w:
        w.write_at(0, DATA[:100])
        before = threading.active_count()

        async def main() -> WaitOutcome:
            return await w.wait_range_async(0, 100)

        assert asyncio.run(main()) is WaitOutcome.READY
        assert threading.active_count() == before
        w.commit()
        assert asyncio.run(w.wait_range_async(100, 200)) is WaitOutcome.EOF
        w.unlink()


@pytest.mark.timeout(60)
def test_cancelling_the_task_ends_the_parked_wait(name: str) -> None:
    with shmstore.create(name, capacity=1 << 16) as w:
        r = shmstore.open(name)

        async def main() -> None:
            wait = asyncio.create_task(r.wait_range_async(0, 10))
            for _ in range(20):
                await asyncio.sleep(0)
            wait.cancel()
            with pytest.raises(asyncio.CancelledError):
                await wait
            with pytest.raises(TimeoutError):  # asyncio's timeout cancels it the same way
                await asyncio.wait_for(r.wait_range_async(0, 10), 0.05)
            # the handle still works: nothing was left parked
            w.write_at(0, DATA[:10])
            assert await r.wait_range_async(0, 10) is WaitOutcome.READY

        asyncio.run(main())
        _wait_threads_gone()
        r.close()
        w.unlink()


@pytest.mark.timeout(60)
def test_wait_range_async_raises_like_wait_range(name: str) -> None:
    with shmstore.create(name, capacity=1 << 16) as w:
        r = shmstore.open(name)

        async def main() -> None:
            with pytest.raises(TimeoutError):
                await r.wait_range_async(0, 10, timeout=0)
            wait = asyncio.create_task(r.wait_range_async(0, 10))
            for _ in range(20):
                await asyncio.sleep(0)
            w.fail("upstream broke")
            with pytest.raises(shmstore.ResourceFailed):
                await wait
            with pytest.raises(shmstore.ResourceFailed):
                await r.wait_range_async(0, 10)

        asyncio.run(main())
        r.close()
        w.unlink()


@pytest.mark.timeout(60)
def test_aiter_ranges_follows_another_process_until_commit(name: str, ctx: Any) -> None:
    owner = shmstore.create(name, capacity=1 << 16)
    chunks = [(8192, 12288), (0, 4096), (4096, 8192)]
    go = ctx.Event()
    p = ctx.Process(target=_writer, args=(name, go, chunks, True))
    p.start()
    r = shmstore.open(name)

    async def main() -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        go.set()  # the first chunk
        async for s, e in r.aiter_ranges(timeout=30):
            got.append((s, e))
            covered = sum(b - a for a, b in got)
            if covered < 12288:
                go.set()  # the next chunk, only once this one has arrived
            elif covered == 12288:
                go.set()  # the commit ends the iteration
        return got

    try:
        got = asyncio.run(main())
        assert got == chunks
        assert r.read(0, 12288) == DATA[:12288]
        p.join(30)
        assert p.exitcode == 0
    finally:
        r.close()
        owner.unlink()
        owner.close()
    _wait_threads_gone()


@pytest.mark.timeout(60)
def test_leaving_aiter_ranges_early_stops_its_wait(name: str) -> None:
    with shmstore.create(name, capacity=1 << 16) as w:
        w.write_at(0, DATA[:10])
        r = shmstore.open(name)

        async def main() -> tuple[int, int]:
            it = r.aiter_ranges()
            first = await it.__anext__()
            nxt = asyncio.create_task(it.__anext__())  # parks: nothing new
            for _ in range(20):
                await asyncio.sleep(0)
            nxt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await nxt
            await it.aclose()
            return first

        assert asyncio.run(main()) == (0, 10)
        _wait_threads_gone()
        r.close()
        w.unlink()
