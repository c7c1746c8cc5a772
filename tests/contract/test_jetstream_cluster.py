"""docker-compose.yml's three-node NATS cluster, run from the wheel's nats-server on loopback.

Each node runs the command line compose gives it, with the compose hostnames, ports and
volume mapped to free loopback ports and tmp dirs; the broker then connects with the list
LEDGERBRIDGE_NATS_URL holds (mapped the same way) and the replicas compose sets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from adapters.errors import TransientError
from adapters.events.broker import JetStreamBroker, PublishResult, subject_for
from tests.fixtures.nats import NatsServer
from tests.fixtures.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
NODES = ("nats-1", "nats-2", "nats-3")
T = TypeVar("T")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def on_loopback(
    command: list[str], node: str, ports: dict[str, dict[str, int]], store: Path
) -> list[str]:
    """Compose's command line for `node` with its names, ports and volume mapped here."""
    here = {"/data": str(store), "8222": str(ports[node]["monitor"])}
    mapped = []
    for argument in command:
        argument = argument.replace("0.0.0.0:6222", f"127.0.0.1:{ports[node]['route']}")
        for other in NODES:
            argument = argument.replace(f"{other}:6222", f"127.0.0.1:{ports[other]['route']}")
        mapped.append(here.get(argument, argument))
    return [*mapped, "-a", "127.0.0.1", "-p", str(ports[node]["client"])]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, NatsServer]]:
    services = compose()["services"]
    ports = {n: {"client": free_port(), "route": free_port(), "monitor": free_port()}
             for n in NODES}  # fmt: skip
    nodes = {
        name: NatsServer(
            tmp_path / name,
            port=ports[name]["client"],
            monitor_port=ports[name]["monitor"],
            arguments=on_loopback(services[name]["command"], name, ports, tmp_path / name),
        )
        for name in NODES
    }
    try:
        for node in nodes.values():
            node.spawn()
        for node in nodes.values():
            node.wait_until_healthy()
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


async def retried(call: Callable[[], Awaitable[T]], seconds: float = 15.0) -> T:
    """`call` again after each TransientError, as the relay does (a leader election)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except TransientError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_the_compose_cluster_keeps_three_copies_and_publishes_on_with_a_node_down(
    cluster: dict[str, NatsServer],
) -> None:
    env = compose()["x-ledgerbridge"]["environment"]
    url = env["LEDGERBRIDGE_NATS_URL"]
    for name, node in cluster.items():
        url = url.replace(f"nats://{name}:4222", node.url)
    replicas = int(env["LEDGERBRIDGE_NATS_STREAM_REPLICAS"])
    async with await JetStreamBroker.connect(url, replicas=replicas, publish_timeout=2.0) as broker:
        assert await retried(broker.ensure_stream) == "created"
        info = await broker.stream_info()
        assert info.cluster is not None and info.cluster.leader in NODES
        assert len(info.cluster.replicas or []) == len(NODES) - 1

        subject = subject_for("com.ledgerbridge.document.posted.v1", "in_1")
        first_id, second_id = f"evt-{uuid.uuid4()}", f"evt-{uuid.uuid4()}"
        await retried(lambda: broker.publish(subject, b"1", first_id))
        await asyncio.to_thread(cluster[info.cluster.leader].stop)  # the stream's leader

        # Publishing goes on with two of three; a retry of an unsure publish is stored once.
        second: PublishResult = await retried(lambda: broker.publish(subject, b"2", second_id))
        assert second.sequence == 2
        again = await retried(lambda: broker.publish(subject, b"2", second_id))
        assert again.duplicate and again.sequence == 2
        assert await retried(broker.stream_message_count) == 2
