"""Work a process does beside its main job (the worker's events out, its health records):
started with the block, cancelled at its end, and reconnecting by itself after a failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from adapters.logs import get_logger

log = get_logger("ledgerbridge.background")

# Waits after each failure in a row; a connection that lasted longer than the last one
# starts the count again.
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """`work` runs as a task while the block runs, and is cancelled (and awaited) after."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def keep_connected(
    connect: Callable[[], Awaitable[C]],
    work: Callable[[C], Awaitable[None]],
    what: str,
    delays: tuple[float, ...] = RETRY_SECONDS,
) -> None:
    """Until cancelled: connect, `work` on the connection until it fails, close it, wait
    (longer after each failure in a row), again. A failure is logged as `what` not done yet:
    the work waits where it is kept (the outbox, the stream), nothing is dropped."""
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        connection: C | None = None
        started = loop.time()
        try:
            connection = await connect()
            await work(connection)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if loop.time() - started > delays[-1]:
                failures = 0
            delay = delays[min(failures, len(delays) - 1)]
            failures += 1
            log.warning(f"{what} not done yet; retrying", error=str(err), seconds=delay)
            await _close(connection)
            connection = None
            await asyncio.sleep(delay)
        finally:
            await _close(connection)


async def _close(connection: Closable | None) -> None:
    if connection is not None:
        with contextlib.suppress(Exception):
            await connection.close()
