"""Connecting to Temporal: one data converter everywhere, and patience while it starts."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from adapters.codec import codec_from_settings
from adapters.settings import Settings
from adapters.tracing import temporal_interceptors


def data_converter(codec: PayloadCodec | None = None) -> DataConverter:
    """The pydantic converter; with a codec, payloads are encoded by it and failure messages
    and stack traces travel as an encoded payload too (they can quote names and amounts)."""
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect_temporal(
    address: str,
    namespace: str,
    *,
    wait_seconds: float = 0,
    codec: PayloadCodec | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """Connect, retrying for up to `wait_seconds`: an open port is not a ready server."""
    deadline = time.monotonic() + wait_seconds
    converter = data_converter(codec)
    while True:
        try:
            return await Client.connect(
                address,
                namespace=namespace,
                data_converter=converter,
                interceptors=temporal_interceptors(),  # none unless tracing is on
                runtime=runtime,
            )
        except (RuntimeError, RPCError, OSError):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)


async def connect_for(
    settings: Settings, *, wait_seconds: float = 0, runtime: Runtime | None = None
) -> Client:
    """The client of everything that starts, runs or reads workflows: encrypting payloads
    whenever payload keys are configured (`runtime`: the worker's, exporting SDK metrics)."""
    return await connect_temporal(
        settings.temporal_address,
        settings.temporal_namespace,
        wait_seconds=wait_seconds,
        codec=codec_from_settings(settings),
        runtime=runtime,
    )
