"""Just enough HTTP/1.1 on raw asyncio streams for a proxy that must be able to misbehave.

An ASGI server always answers (a crashed app is a 500); only a server that owns the socket
can close it without a word, so the proxy reads and writes HTTP itself: request head,
Content-Length or chunked body, `Expect: 100-continue`, keep-alive, and a reset (RST)
instead of an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
# Never relayed: they describe one connection, not the message (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Request | None:
    """The next request on the connection, or None when the client closed it cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if err.partial.strip():
            raise BadRequest(400, "incomplete request head") from err
        return None
    except asyncio.LimitOverrunError as err:
        raise BadRequest(431, "request head too large") from err
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError as err:
        raise BadRequest(400, "malformed request line") from err
    if not version.startswith("HTTP/1."):
        raise BadRequest(505, "only HTTP/1.x is spoken here")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        headers.append((name, value.strip()))
    request = Request(method.upper(), target, version, headers, b"")
    if (request.header("expect") or "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    request.body = await _read_body(reader, request)
    return request


async def _read_body(reader: asyncio.StreamReader, request: Request) -> bytes:
    try:
        if "chunked" in (request.header("transfer-encoding") or "").lower():
            return await _read_chunked(reader)
        length = int(request.header("content-length") or 0)
        if length < 0 or length > MAX_BODY:
            raise BadRequest(413, "request body too large")
        return await reader.readexactly(length) if length else b""
    except ValueError as err:
        raise BadRequest(400, "malformed body framing") from err
    except asyncio.IncompleteReadError as err:
        raise BadRequest(400, "request body cut short") from err


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers (ignored) up to the empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise BadRequest(413, "request body too large")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def write_response(
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    head: bool = False,
) -> None:
    """Write one response; `head` answers a HEAD (the upstream's Content-Length, no body)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    bodiless = head or status in (204, 304) or 100 <= status < 200
    out = [f"HTTP/1.1 {status} {phrase}"]
    for name, value in headers:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or (lowered == "content-length" and not head):
            continue
        out.append(f"{name}: {value}")
    if not bodiless:
        out.append(f"Content-Length: {len(body)}")
    out.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + (b"" if bodiless else body))
    await writer.drain()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0): the caller's read fails, it never gets an answer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
