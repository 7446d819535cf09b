"""A fake HTTP proxy on loopback: absolute-form requests forwarded, CONNECT tunnels relayed.

It records each request line it was asked for (`requests`) and the `Proxy-Authorization`
it got (`auth`), so a test can see that traffic went through it and how.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class FakeProxy:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.auth: list[str | None] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *header_lines = head.decode().split("\r\n")
                method, target, version = line.split(" ", 2)
                headers = [h for h in header_lines if h]
                auth = next((h.split(":", 1)[1].strip() for h in headers
                             if h.lower().startswith("proxy-authorization:")), None)
                self.requests.append(f"{method} {target}")
                self.auth.append(auth)
                if method == "CONNECT":
                    host, port = target.rsplit(":", 1)
                    up_reader, up_writer = await asyncio.open_connection(host, int(port))
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
                    return
                parts = urlsplit(target)
                if upstream is None:
                    upstream = await asyncio.open_connection(parts.hostname, parts.port)
                    task = asyncio.create_task(_pipe(upstream[0], writer))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                length = next((int(h.split(":", 1)[1]) for h in headers
                               if h.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length)
                kept = [h for h in headers if not h.lower().startswith("proxy-")]
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                upstream[1].write(
                    f"{method} {path} {version}\r\n".encode()
                    + "".join(f"{h}\r\n" for h in kept).encode() + b"\r\n" + body)
                await upstream[1].drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
