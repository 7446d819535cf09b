"""Requests to one remote server over its pooled transport, with as little work per request as
possible.

httpx's per-request layers (URL merging, header preparation) cost a quarter of the engine's own
time per request, so the URL of each path, the headers every request carries (`Host`,
credentials) and the name TLS checks are built once here, and each request goes straight to the
transport (http11.py). Whatever asks the server something (generation, `/v1/models`,
`/metrics`) goes through the one client, so it reaches the server the same way.
"""

from __future__ import annotations

from typing import Any

import httpx

from .endpoint import Endpoint

# Parsed URLs kept per path: a few routes are called over and over.
_KEPT_URLS = 64


class UpstreamClient:
    """One server's address (`endpoint`, or one `address` its name resolved to) and pool."""

    def __init__(self, endpoint: Endpoint, address: str | None,
                 transport: httpx.AsyncBaseTransport) -> None:
        self.base = endpoint.at(address)
        self.headers: list[tuple[bytes, bytes]] = [(b"host", endpoint.host_header.encode())]
        if endpoint.authorization:
            self.headers.append((b"authorization", endpoint.authorization.encode()))
        self.extensions: dict[str, Any] = {}
        if address is not None and endpoint.scheme == "https":
            # The certificate names the service, not the pod's address.
            self.extensions["sni_hostname"] = endpoint.host
        self._transport = transport
        self._urls: dict[str, httpx.URL] = {}
        self._closed = False

    def url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self.base + path)
            if len(self._urls) < _KEPT_URLS:  # the routes; not every id a path may hold
                self._urls[path] = url
        return url

    async def request(self, method: str, path: str, content: bytes | None,
                      timeouts: dict[str, float], extra: list[tuple[bytes, bytes]] | None = None,
                      ) -> httpx.Response:
        """Send a request; the response's body is left to read (and to close)."""
        headers = [*self.headers, *(extra or ())]
        if content is not None:
            headers.append((b"content-length", b"%d" % len(content)))
        # Given a stream and every header, httpx.Request skips its own header preparation
        # (45 us a request here, a quarter of the engine's own time).
        upstream = httpx.Request(method, self.url(path),
                                 stream=httpx.ByteStream(content or b""), headers=headers,
                                 extensions={"timeout": timeouts, **self.extensions})
        return await self._transport.handle_async_request(upstream)

    async def aclose(self) -> None:
        """Close the pool; streams still open keep their connections until they end."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """A response's body, read no further than just past `limit` bytes."""
    content = b""
    stream: Any = response.stream
    async for piece in stream:
        content += piece
        if len(content) > limit:
            break
    return content
