"""Telemetry on for the benches' on/off measurements: an OTLP/HTTP endpoint that discards
what it receives, a scraper that reads /metrics as Prometheus would, and the options both
benches take (used by bench.ingress and bench.orchestration)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import httpx
import yaml

from adapters.background import in_background
from bench._common import PROJECT_ROOT

TELEMETRY_RATIO: Final = 0.95  # metrics and traces on cost at most 5 %
# The Prometheus we ship (the compose stack's; `ledgerbridge up --monitoring` scrapes as often).
DEPLOYED_PROMETHEUS: Final = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"
# Prometheus' duration units (a duration is one or more of them in order: `1m30s`).
DURATION_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
R = TypeVar("R")


def deployed_scrape_interval() -> float:
    """Seconds between two scrapes in the shipped Prometheus configuration (`15s`)."""
    interval = str(yaml.safe_load(DEPLOYED_PROMETHEUS.read_text())["global"]["scrape_interval"])
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w)", interval)
    if not parts or "".join(n + unit for n, unit in parts) != interval:
        raise ValueError(f"{DEPLOYED_PROMETHEUS}: scrape_interval {interval!r} is not a duration")
    return float(sum(int(n) * DURATION_UNITS[unit] for n, unit in parts))


def seconds(text: str) -> float:
    """A positive number of seconds (an option's type)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: not a positive number of seconds")
    return value


def add_telemetry_options(parser: argparse.ArgumentParser, items: str) -> None:
    """The on/off measurement's options; `items` names what a round counts (webhooks...)."""
    parser.add_argument(
        "--telemetry-cycles", type=int, default=1, metavar="N",
        help=f"telemetry off, on, on, off: N times (each round N/2 {items})",
    )  # fmt: skip
    parser.add_argument(
        "--scrape-every", type=seconds, default=deployed_scrape_interval(), metavar="SECONDS",
        help="how often the telemetry-on side's /metrics is scraped; default: as the shipped "
        "Prometheus scrapes (deploy/prometheus/prometheus.yml)",
    )  # fmt: skip


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


def scraping(*urls: str, every: float) -> contextlib.AbstractAsyncContextManager[None]:
    """GET each of `urls` now and then every `every` seconds while the block runs, as
    Prometheus would (a round shorter than `every` is scraped once, at its start)."""
    if not every > 0:
        raise ValueError(f"scrape interval {every} s: not positive")

    async def scrape() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                for url in urls:
                    (await http.get(url)).raise_for_status()
                await asyncio.sleep(every)

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
