"""Telemetry on for the benches' on/off measurements: an OTLP/HTTP endpoint that discards
what it receives, and a scraper that reads /metrics as Prometheus would (used by
bench.ingress and bench.orchestration)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import httpx

from adapters.background import in_background

TELEMETRY_RATIO: Final = 0.95  # metrics and traces on cost at most 5 %
SCRAPE_EVERY: Final = 1.0  # seconds; Prometheus' default is 15 s: this is the harsher case
R = TypeVar("R")


@dataclass
class Sink:
    url: str
    requests: int = 0


@contextlib.asynccontextmanager
async def discarding_otlp_sink() -> AsyncIterator[Sink]:
    """An OTLP/HTTP endpoint that reads each export and answers 200, keeping nothing."""
    sink = Sink("")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                sink.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink.url = f"http://127.0.0.1:{port}"
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()


def scraping(*urls: str) -> contextlib.AbstractAsyncContextManager[None]:
    """GET each of `urls` every SCRAPE_EVERY seconds while the block runs, as Prometheus would."""

    async def scrape() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                for url in urls:
                    (await http.get(url)).raise_for_status()
                await asyncio.sleep(SCRAPE_EVERY)

    return in_background(scrape())


async def on_off_rounds(
    cycles: int, off: Callable[[], Awaitable[R]], on: Callable[[], Awaitable[R]]
) -> tuple[list[R], list[R]]:
    """Rounds off, on, on, off, `cycles` times (drift falls on both sides alike; one round
    varies from the next, so more cycles resolve a smaller difference): the off rounds and
    the on rounds, each in the order run."""
    offs: list[R] = []
    ons: list[R] = []
    for _ in range(cycles):
        offs.append(await off())
        ons += [await on(), await on()]
        offs.append(await off())
    return offs, ons
