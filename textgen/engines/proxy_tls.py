"""How http11's connections to a remote server are set up: TLS, and an HTTP proxy between.

`Http11Transport` speaks HTTP/1.1 on a connection; this module holds what decides how that
connection is opened (REMOTE_TLS_VERIFY, REMOTE_TLS_CA_FILE, REMOTE_PROXY), kept apart so the
client's hot path reads as HTTP/1.1 alone:

- TLS: one context for every connection of a transport (building one reads the CA store),
  verified against the system's CAs unless given a CA file, a context, or told not to verify;
- a proxy: a plain-HTTP request goes to the proxy in absolute form (its whole URL as the
  target, with the proxy's credentials); https goes through a CONNECT tunnel and then TLS with
  the server inside it, so the proxy sees neither the request nor the server's credentials.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

P = TypeVar("P", bound=asyncio.Protocol)


def tls_context(verify: ssl.SSLContext | bool | str | Path) -> ssl.SSLContext:
    """`verify`: True (the system's CAs), False (no checks), a CA bundle's path, or a context."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(verify))


class HttpProxy:
    """An `http://[user:pass@]host:port` proxy that every request goes through."""

    def __init__(self, url: str | httpx.URL) -> None:
        self.url = httpx.URL(url)
        self.host = self.url.host
        self.port = self.url.port or 80
        self.where = f"the proxy {self.url.host}:{self.url.port}"  # for error messages
        self._auth = b""
        if self.url.username:
            pair = f"{self.url.username}:{self.url.password}".encode()
            self._auth = b"proxy-authorization: Basic " + base64.b64encode(pair) + b"\r\n"

    def absolute_form(self, url: httpx.URL) -> tuple[bytes, list[bytes]]:
        """A plain-HTTP request's target through the proxy (its whole URL), and the header
        lines the proxy reads."""
        return url.raw_scheme + b"://" + url.netloc + url.raw_path, [self._auth] if self._auth else []

    async def open(self, make: Callable[[], P], host: bytes, port: int,
                   context: ssl.SSLContext | None, server_hostname: str | None) -> P:
        """A connection to `host:port` through the proxy, with the protocol `make` builds."""
        loop = asyncio.get_running_loop()
        if context is None:  # plain HTTP: requests go to the proxy in absolute form
            _, conn = await loop.create_connection(make, self.host, self.port)
            return conn
        # https: a CONNECT tunnel through the proxy, then TLS with the server inside it.
        transport, tunnel = await loop.create_connection(_Tunnel, self.host, self.port)
        try:
            target = host + b":%d" % port
            transport.write(b"CONNECT " + target + b" HTTP/1.1\r\nhost: " + target + b"\r\n"
                            + self._auth + b"\r\n")
            status = await tunnel.answered
            if status != 200:
                raise ConnectionRefusedError(f"the proxy answered CONNECT with HTTP {status}")
            conn = make()
            tls = await loop.start_tls(transport, conn, context, server_hostname=server_hostname)
        except BaseException:
            transport.close()
            raise
        assert tls is not None
        conn.connection_made(tls)
        return conn


class _Tunnel(asyncio.Protocol):
    """Reads a proxy's answer to CONNECT; the connection then carries TLS to the server."""

    def __init__(self) -> None:
        self.answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._head = b""

    def data_received(self, data: bytes) -> None:
        self._head += data
        if b"\r\n\r\n" in self._head and not self.answered.done():
            status_line = self._head.split(b"\r\n", 1)[0].split()
            ok = len(status_line) >= 2 and status_line[1].isdigit()
            self.answered.set_result(int(status_line[1]) if ok else 0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(ConnectionResetError("the proxy closed the connection"))
