"""A size limit on the request line and headers: 431 past ``max_header_bytes``.

Why: uvicorn's httptools protocol has no limit at all. One 128 MB header was read to the end,
answered 200 after 25 s, held other requests up for 7 s and grew the process (issue 11). h11
has a limit but answers it with a 400. Body size is checked separately (``read_body``, 413).

The protocols below count the bytes of a request's head as they arrive and answer
``431 Request Header Fields Too Large`` and close the connection as soon as the head is over
the limit, without waiting for (or buffering) the rest of it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Default limit of the request line plus headers (nginx allows 4 x 8 KiB, Go 1 MiB).
DEFAULT_MAX_HEADER_BYTES = 64 * 1024

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
)


def too_large_response(limit: int) -> bytes:
    body = (
        b'{"error":"request header fields too large",'
        b'"description":"the request line and headers exceed %d bytes"}' % limit
    )
    return _431 + b"content-length: %d\r\n\r\n" % len(body) + body


class _HeadTooLargeError(Exception):
    """Raised inside the parser's callback to stop parsing a head that is over the limit."""


def _reject(transport: asyncio.Transport, limit: int) -> None:
    if not transport.is_closing():
        transport.write(too_large_response(limit))
        transport.close()


class LimitedH11Protocol(H11Protocol):
    """h11 with its own limit (``h11_max_incomplete_event_size``) answered with 431."""

    max_header_bytes = DEFAULT_MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
        self._head_bytes = 0
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        # h11's own limit covers only a head that is still incomplete: a head over the limit that
        # arrives whole in one read would be parsed and served. So count the head's bytes here,
        # up to its blank line, and refuse it before h11 sees it.
        if self.conn.their_state is h11.IDLE:
            # The blank line may straddle two reads: look for it in the last read's tail too.
            tail = self._tail
            end = (tail + data).find(b"\r\n\r\n")
            size = self._head_bytes + (len(data) if end < 0 else end + 4 - len(tail))
            # A complete head starts the count afresh for the next request on the connection.
            self._head_bytes, self._tail = (size, data[-3:]) if end < 0 else (0, b"")
            if size > self.max_header_bytes:
                self._head_bytes = size
                _reject(self.transport, self.max_header_bytes)
                return
        else:
            self._head_bytes, self._tail = 0, b""
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if self._head_bytes > self.max_header_bytes:
            _reject(self.transport, self.max_header_bytes)
            return
        super().send_400_response(msg)


def _httptools_protocol() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools not installed
        return None

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """httptools, counting the bytes that arrive while a request's head is incomplete."""

        max_header_bytes = DEFAULT_MAX_HEADER_BYTES

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._in_head = True
            self._head_bytes = 0
            self._too_large = False
            super().connection_made(transport)

        def on_message_begin(self) -> None:
            self._in_head = True
            self._head_bytes = 0
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            # A head that arrived whole in one read: its exact size.
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.max_header_bytes:
                self._too_large = True
                raise _HeadTooLargeError  # aborts the parse; answered in send_400_response
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                _reject(self.transport, self.max_header_bytes)
                return
            super().send_400_response(msg)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                # Bytes of this chunk before the head began (a previous body) count too: at
                # most one read's worth of slack, and only for pipelined requests.
                self._head_bytes += len(data)
                if self._head_bytes > self.max_header_bytes:
                    _reject(self.transport, self.max_header_bytes)

    return LimitedHttpToolsProtocol


def limited_protocol(choice: str, max_header_bytes: int) -> type[asyncio.Protocol]:
    """The uvicorn HTTP protocol class for ``choice`` ("auto", "h11", "httptools") with the limit."""
    base: type[asyncio.Protocol] | None = None
    if choice in ("auto", "httptools"):
        base = _httptools_protocol()
        if base is None and choice == "httptools":
            raise RuntimeError("--http httptools: httptools is not installed")
    if base is None:
        base = LimitedH11Protocol
    return type(base.__name__, (base,), {"max_header_bytes": max_header_bytes})
