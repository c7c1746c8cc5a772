"""The API's Temporal client: connected once, on first use or at start-up."""

import asyncio

from temporalio.client import Client
from temporalio.service import RPCError

from adapters.codec import codec_from_settings
from adapters.settings import Settings
from adapters.temporal import connect_temporal


class TemporalUnavailable(Exception):
    pass


class TemporalConnection:
    """One client per app, connected on first use; a failed connect is retried next request."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Built now, so a malformed payload key stops start-up instead of failing requests.
        self._codec = codec_from_settings(settings)
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        connect_temporal(
                            self._settings.temporal_address,
                            self._settings.temporal_namespace,
                            codec=self._codec,
                        ),
                        timeout=5,
                    )
                except (TimeoutError, RuntimeError, RPCError, OSError) as err:
                    raise TemporalUnavailable(str(err)) from err
            return self._client
