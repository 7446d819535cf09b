"""A lean HTTP/1.1 transport for `httpx.AsyncClient`: keep-alive pool, asyncio protocol, httptools.

httpx's default transport (httpcore over anyio and h11) cost about 1.5 ms of CPU per proxied
request on the 2-core dev machine, and its pool checks every idle connection on every request
(a `poll` each); aiohttp's ClientSession, measured in the same gateway benchmark, added a third
to the gateway's CPU per request (benchmarks/RESULTS.md). This transport parses with httptools
(the C parser uvicorn uses), keeps idle connections in a deque per origin, and wakes the reader
from `data_received` directly. It speaks only what a vLLM server needs: HTTP/1.1 over TCP or
TLS, optionally through an HTTP proxy (how such connections are opened: proxy_tls.py), request
bodies in memory, responses streamed, 1xx interim responses skipped.

It never retries: a POST may start a generation upstream, and only the caller knows whether
another server can take it. What it tells the caller, as httpx's own exceptions:

    ConnectError, ConnectTimeout   nothing was written: safe to send elsewhere
    StaleConnection                written on a reused idle connection that the server closed
                                   before sending a byte back: it never read the request (a
                                   keep-alive race), safe to send again on a new connection
    RemoteProtocolError            a fresh connection closed without an answer, or invalid HTTP
    ReadError, ReadTimeout         the answer started, or the server may be working on it
    WriteTimeout, PoolTimeout      the body could not be written / no connection was free
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httptools
import httpx

from .proxy_tls import HttpProxy, tls_context

_HIGH_WATER = 1 << 20  # pause reading past 1 MB of body the consumer has not taken yet

Origin = tuple[bytes, bytes, int]


class StaleConnection(httpx.RemoteProtocolError):
    """A reused keep-alive connection was closed by the server before any byte of an answer:
    the request never reached the server's application, so it may be sent again."""


class _Connection(asyncio.Protocol):
    """One TCP connection; one request at a time on it."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        # Set when the connection is taken from the idle pool for a request.
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._writable: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False  # any byte of the answer to the current request
        self.error: Exception | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self._interim = False
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
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
            elif self.reused and not self.received:
                self._fail(StaleConnection(
                    "The server closed an idle connection as the request was sent on it."))
            else:
                self._fail(
                    httpx.RemoteProtocolError("Server disconnected without sending a response.")
                )
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _delimited(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" in names or b"transfer-encoding" in names

    # --- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows.
            self._interim = True
            self.headers = []
            return
        self.status = status
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
        if self._interim:
            self._interim = False
            return
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

    async def send(self, data: bytes, limit: float | None) -> None:
        """Write a request; past the socket's buffer, wait (bounded) until it drains."""
        assert self.transport is not None
        self.transport.write(data)
        writable = self._writable
        if writable is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(writable), limit)
        except TimeoutError:
            error = httpx.WriteTimeout(f"The request could not be written in {limit} s.")
            self._fail(error)
            raise error from None

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
    """Keep-alive connections per origin, at most `max_connections` busy at once.

    `verify`: True (the system's CAs), False, a CA bundle's path, or an `ssl.SSLContext`.
    `proxy`: an `http://[user:pass@]host:port` proxy for every request, or None.
    A request may carry `extensions["sni_hostname"]`: the name a TLS certificate is checked
    against when the URL names an address (a replica found through DNS).
    """

    def __init__(
        self,
        *,
        max_connections: int = 256,
        keepalive_expiry: float = 4.0,
        verify: ssl.SSLContext | bool | str | Path = True,
        proxy: str | httpx.URL | None = None,
    ) -> None:
        self._idle: dict[Origin, collections.deque[_Connection]] = {}
        self._max = max_connections
        self._busy = 0
        self._expiry = keepalive_expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._proxy = HttpProxy(proxy) if proxy else None
        self._slot_freed: asyncio.Event | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        await self._acquire(timeouts.get("pool"))
        conn: _Connection | None = None
        try:
            conn = self._checkout(origin) or await self._connect(
                origin, timeouts.get("connect"), request.extensions.get("sni_hostname"))
            body = await request.aread()
            target = url.raw_path
            extra: list[bytes] = []
            if self._proxy is not None and url.scheme == "http":
                # Through a proxy, a plain-HTTP request names its whole URL (absolute form).
                target, extra = self._proxy.absolute_form(url)
            head = [request.method.encode(), b" ", target, b" HTTP/1.1\r\n", *extra]
            sized = False
            for name, value in request.headers.raw:
                head += (name, b": ", value, b"\r\n")
                sized = sized or name.lower() == b"content-length"
            if body and not sized:
                head.append(b"content-length: %d\r\n" % len(body))
            head.append(b"\r\n")
            await conn.send(b"".join(head) + body, timeouts.get("write"))
            read_timeout = timeouts.get("read")
            while not conn.headers_done and conn.error is None:
                await conn.wait(read_timeout, "response")
            if conn.error is not None:
                raise conn.error
        except BaseException as exc:
            self._discard(conn)
            if isinstance(exc, StaleConnection):
                # Its siblings idled as long: the server likely closed them too.
                self._drop_idle(origin)
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

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have timed out
            if not conn.closed and now - conn.idle_since < self._expiry:
                conn._reset()
                conn.reused = True
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return None

    def _tls(self) -> ssl.SSLContext:
        """One TLS context for every connection, built when the first needs it."""
        if self._ssl is None:
            self._ssl = tls_context(self._verify)
        return self._ssl

    async def _connect(self, origin: Origin, limit: float | None,
                       sni_hostname: str | None = None) -> _Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode()
        context = self._tls() if scheme == b"https" else None
        server_hostname = (sni_hostname or host) if context is not None else None
        loop = asyncio.get_running_loop()
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(limit):
                if self._proxy is None:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(origin), host, port, ssl=context,
                        server_hostname=server_hostname,
                    )
                    return conn
                where = self._proxy.where
                return await self._proxy.open(lambda: _Connection(origin), raw_host, port,
                                              context, server_hostname)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"No connection to {where} in {limit} s.") from None
        except OSError as exc:  # ssl.SSLError (a certificate refused) is one too
            raise httpx.ConnectError(f"Cannot connect to {where}: {exc}") from exc

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

    def _drop_idle(self, origin: Origin) -> None:
        for conn in self._idle.pop(origin, ()):
            if conn.transport is not None:
                conn.transport.close()

    async def aclose(self) -> None:
        self._closed = True
        for origin in list(self._idle):
            self._drop_idle(origin)
