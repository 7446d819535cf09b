"""The library HTTP clients measured against the lab's own transport (`textgen/engines/http11.py`).

Each is an `httpx.AsyncBaseTransport`, the interface a remote server's requests go through, so
`gateway_overhead.py --clients` runs the same gateway code over each and only the client differs:

    http11     the lab's transport (asyncio protocol + httptools), what the product ships
    aiohttp    aiohttp's ClientSession (installed with vLLM), one session per server
    httpcore   httpx's own transport (httpcore's pool), with a pool sized as the lab's

Not a product part: `benchmarks/gateway_server.py --client NAME` serves the lab over one of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

CLIENTS = ("http11", "aiohttp", "httpcore")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """aiohttp's ClientSession behind httpx's transport interface."""

    def __init__(self, *, max_connections: int = 256, keepalive_expiry: float = 4.0) -> None:
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._max, keepalive_timeout=self._expiry)
        # The body is passed on as it comes: no decompression, no cookie jar.
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp

        session = self._session or self._open()
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(sock_connect=timeouts.get("connect"),
                                        sock_read=timeouts.get("read"))
        headers = {k.decode(): v.decode() for k, v in request.headers.raw}
        try:
            response = await session.request(
                request.method, str(request.url), data=await request.aread(), headers=headers,
                timeout=timeout, allow_redirects=False,
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc)) from exc
        return httpx.Response(response.status, headers=list(response.raw_headers),
                              stream=_AiohttpBody(response))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _AiohttpBody(httpx.AsyncByteStream):
    def __init__(self, response: Any) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for piece in self._response.content.iter_any():
                yield piece
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc)) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        self._response.release()

    async def aclose(self) -> None:
        if not self._response.content.at_eof():
            self._response.close()  # not read to its end: the connection goes, not back
        else:
            self._response.release()


def httpcore_transport(*, max_connections: int = 256, keepalive_expiry: float = 4.0
                       ) -> httpx.AsyncBaseTransport:
    """httpx's default transport (httpcore), its pool sized and aged as the lab's."""
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_connections,
                          keepalive_expiry=keepalive_expiry)
    return httpx.AsyncHTTPTransport(limits=limits, retries=0)


def factory(name: str) -> Callable[..., httpx.AsyncBaseTransport]:
    """The transport class (or builder) of a client by name."""
    if name == "http11":
        from textgen.engines.http11 import Http11Transport

        return Http11Transport
    if name == "aiohttp":
        return AiohttpTransport
    if name == "httpcore":
        return httpcore_transport
    raise ValueError(f"unknown client {name!r}; one of {', '.join(CLIENTS)}")
