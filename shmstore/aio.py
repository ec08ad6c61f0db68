"""asyncio support: a blocking shmstore wait run where it cannot hold the event loop.

A wait parks on a named semaphore, which asyncio cannot poll. Each awaited wait that has to
park runs on a thread of its own (never the loop's default executor: a few dozen parked waits
would fill it and block unrelated ``to_thread`` work); a wait that is satisfied at once never
starts a thread. Cancelling the awaiting task fires the wait's ``CancelToken``, which posts the
parked thread's semaphore: the thread ends at once and the task sees ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

from .resource import CancelToken

T = TypeVar("T")


def _settle(fut: asyncio.Future[T], value: T | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)  # type: ignore[arg-type]


async def run_blocking(fn: Callable[[], T], token: CancelToken) -> T:
    """Run ``fn`` (a wait that ``token`` cancels) on a thread of its own and await it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = fn()
        except BaseException as exc:  # delivered to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody awaits
            loop.call_soon_threadsafe(_settle, fut, value, error)

    threading.Thread(target=run, name="shmstore-wait", daemon=True).start()
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        token.cancel()  # wakes the parked thread; it ends with Cancelled
        with contextlib.suppress(BaseException):
            await fut
        raise
