"""A lean HTTP/1.1 transport for `httpx.AsyncClient`: keep-alive pool, asyncio protocol, httptools.

httpx's default transport (httpcore over anyio and h11) cost about 1.5 ms of CPU per proxied
request on the 2-core dev machine, and its pool checks every idle connection on every request
(a `poll` each), so at 32 connections it cost more than the rest of the gateway together. This
transport parses with httptools (the C parser uvicorn uses), keeps idle connections in a deque
per origin, and wakes the reader from `data_received` directly. It speaks only what a vLLM
server needs: HTTP/1.1 over TCP (or TLS), request bodies in memory, responses streamed.

Failures are httpx's own exceptions (ConnectError, ConnectTimeout, ReadTimeout, PoolTimeout,
RemoteProtocolError, ReadError), so callers handle them as with any httpx transport.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

_HIGH_WATER = 1 << 20  # pause reading past 1 MB of body the consumer has not taken yet


class _Connection(asyncio.Protocol):
    """One TCP connection; one request at a time on it."""

    def __init__(self, origin: tuple[bytes, bytes, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: Exception | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("The server tried to upgrade the connection."))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"The server sent invalid HTTP ({exc})."))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.headers_done and not self._delimited():
            self.complete = True  # a body delimited by the end of the connection
        if not self.complete:
            if self.headers_done:
                self._fail(httpx.ReadError("The server closed the connection mid-response."))
            else:
                self._fail(
                    httpx.RemoteProtocolError("Server disconnected without sending a response.")
                )
        self._wake()

    def _delimited(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" in names or b"transfer-encoding" in names

    # --- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # --- for the transport ----------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, limit: float | None, what: str) -> None:
        """Wait for the next event on this connection (headers, body, end, error)."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None if limit is None else loop.call_later(limit, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            self._fail(httpx.ReadTimeout(f"No {what} from the server in {limit} s."))
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        chunk = b"".join(self.body) if len(self.body) > 1 else self.body[0]
        self.body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(
        self, pool: Http11Transport, conn: _Connection, read_timeout: float | None
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take()
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                self._release()
                return
            await conn.wait(self._timeout, "body")

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._conn)

    async def aclose(self) -> None:
        # A response not read to its end closes its connection: that is how the upstream
        # learns the client went away (vLLM then aborts the generation).
        self._release()


class Http11Transport(httpx.AsyncBaseTransport):
    """Keep-alive connections per origin, at most `max_connections` busy at once."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        keepalive_expiry: float = 4.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._idle: dict[tuple[bytes, bytes, int], collections.deque[_Connection]] = {}
        self._max = max_connections
        self._busy = 0
        self._expiry = keepalive_expiry
        self._verify = verify
        self._slot_freed: asyncio.Event | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        await self._acquire(timeouts.get("pool"))
        conn: _Connection | None = None
        try:
            conn = self._checkout(origin) or await self._connect(origin, timeouts.get("connect"))
            body = await request.aread()
            head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
            sized = False
            for name, value in request.headers.raw:
                head += (name, b": ", value, b"\r\n")
                sized = sized or name.lower() == b"content-length"
            if body and not sized:
                head.append(b"content-length: %d\r\n" % len(body))
            head.append(b"\r\n")
            assert conn.transport is not None
            conn.transport.write(b"".join(head) + body)
            read_timeout = timeouts.get("read")
            while not conn.headers_done and conn.error is None:
                await conn.wait(read_timeout, "response")
            if conn.error is not None:
                raise conn.error
        except BaseException:
            self._discard(conn)
            raise
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_ResponseBody(self, conn, read_timeout),
            extensions={"http_version": b"HTTP/1.1"},
        )

    # --- the pool -------------------------------------------------------------------------

    async def _acquire(self, limit: float | None) -> None:
        while self._busy >= self._max:
            if self._slot_freed is None:
                self._slot_freed = asyncio.Event()
            try:
                await asyncio.wait_for(self._slot_freed.wait(), limit)
            except TimeoutError:
                raise httpx.PoolTimeout("Every connection to the server is busy.") from None
            self._slot_freed.clear()
        self._busy += 1

    def _free_slot(self) -> None:
        self._busy -= 1
        if self._slot_freed is not None:
            self._slot_freed.set()

    def _checkout(self, origin: tuple[bytes, bytes, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have timed out
            if not conn.closed and now - conn.idle_since < self._expiry:
                conn._reset()
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return None

    async def _connect(self, origin: tuple[bytes, bytes, int], limit: float | None) -> _Connection:
        scheme, host, port = origin
        context = None
        if scheme == b"https":
            context = (
                self._verify
                if isinstance(self._verify, ssl.SSLContext)
                else ssl.create_default_context()
            )
            if self._verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(origin), host.decode(), port, ssl=context
                ),
                limit,
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"No connection to {host.decode()}:{port} in {limit} s."
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(f"Cannot connect to {host.decode()}:{port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        self._free_slot()
        if conn.complete and conn.keep_alive and not conn.closed and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(conn.origin, collections.deque()).append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def _discard(self, conn: _Connection | None) -> None:
        self._free_slot()
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
