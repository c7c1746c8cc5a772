"""Connecting to Temporal: one data converter everywhere, and patience while it starts."""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError


async def connect_temporal(address: str, namespace: str, *, wait_seconds: float = 0) -> Client:
    """Connect, retrying for up to `wait_seconds`: an open port is not a ready server."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(
                address, namespace=namespace, data_converter=pydantic_data_converter
            )
        except (RuntimeError, RPCError, OSError):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)
