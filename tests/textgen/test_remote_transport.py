"""The keep-alive HTTP/1.1 transport under each backend's httpx client, against fake upstreams."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.upstreams import FakeUpstream, eventually
from textgen.engines.http11 import Http11Transport, StaleConnection


def idle_closed(transport: Http11Transport) -> bool:
    """Every idle connection in the pool has seen the server close it."""
    return all(conn.closed for idle in transport._idle.values() for conn in idle)


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    transport = Http11Transport()
    async with FakeUpstream() as fake, httpx.AsyncClient(
        base_url=fake.url, transport=transport
    ) as client:
        assert (await client.get("/v1/models")).status_code == 200
        fake.drop_connections()  # the server's keep-alive timeout
        await eventually(lambda: idle_closed(transport))  # the close has reached the client
        assert (await client.get("/v1/models")).status_code == 200
        assert fake.connections == 2


async def test_idle_connections_past_their_expiry_are_replaced() -> None:
    async with FakeUpstream() as fake, httpx.AsyncClient(
        base_url=fake.url, transport=Http11Transport(keepalive_expiry=0.1)
    ) as client:
        await client.get("/v1/models")
        await client.get("/v1/models")
        assert fake.connections == 1
        await asyncio.sleep(0.2)
        await client.get("/v1/models")
        assert fake.connections == 2


async def test_past_max_connections_a_request_waits_then_times_out_for_a_slot() -> None:
    async with FakeUpstream("hold") as fake:  # the stream stays open until the test closes it
        transport = Http11Transport(max_connections=1)
        timeout = httpx.Timeout(5.0, pool=0.2)
        async with httpx.AsyncClient(base_url=fake.url, transport=transport, timeout=timeout) as c:
            body = {"model": "fake/tiny-7b", "prompt": "x", "stream": True}
            async with c.stream("POST", "/v1/completions", json=body) as busy:
                assert busy.status_code == 200
                with pytest.raises(httpx.PoolTimeout):
                    await c.get("/v1/models")
            # The slot is free again once the stream is closed.
            assert (await c.get("/v1/models")).status_code == 200
            await asyncio.wait_for(fake.disconnected.wait(), 5)  # and the stream's connection
            assert not fake.release.is_set()


async def test_a_body_delimited_by_the_end_of_the_connection_is_read_whole() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=Http11Transport()) as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.text == "all of it"
    finally:
        server.close()
        await server.wait_closed()


# --- what the transport tells its caller (the retry rule depends on it) --------------------


async def _raw_server(answer: Any) -> tuple[asyncio.Server, str]:
    """A server whose every connection is handled by `answer(reader, writer, n)`, n counting
    the requests on that connection from 1."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                n += 1
                if not await answer(reader, writer, n):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_interim_1xx_answers_are_skipped_for_the_final_one() -> None:
    async def answer(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(OK)
        return True

    server, url = await _raw_server(answer)
    async with server, httpx.AsyncClient(transport=Http11Transport()) as client:
        for _ in range(2):  # and the connection is clean for the next request
            response = await client.post(url, content=b"{}")
            assert (response.status_code, response.text) == (200, "ok")
            assert "link" not in response.headers


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
async def test_a_connection_closed_before_any_answer_is_stale_only_when_reused(
    reused: bool,
) -> None:
    async def answer(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        if n == 1 and reused:
            writer.write(OK)
            return True
        return False  # closed without a byte back

    server, url = await _raw_server(answer)
    transport = Http11Transport()
    async with server, httpx.AsyncClient(transport=transport) as client:
        if reused:
            assert (await client.post(url, content=b"{}")).status_code == 200
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            # The close must not be seen before the write: take the connection at once.
            await client.post(url, content=b"{}")
        assert isinstance(caught.value, StaleConnection) is reused


async def test_an_answer_cut_after_its_first_byte_is_not_stale() -> None:
    async def answer(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        if n == 1:
            writer.write(OK)
            return True
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-len")
        return False

    server, url = await _raw_server(answer)
    async with server, httpx.AsyncClient(transport=Http11Transport()) as client:
        await client.post(url, content=b"{}")
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.post(url, content=b"{}")
        assert not isinstance(caught.value, StaleConnection)


async def test_a_body_the_server_does_not_read_times_out_writing() -> None:
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    timeout = httpx.Timeout(5.0, write=0.3)
    async with server, httpx.AsyncClient(transport=Http11Transport(), timeout=timeout) as client:
        with pytest.raises(httpx.WriteTimeout):
            await client.post(url, content=b"x" * (64 << 20))


async def test_one_tls_context_serves_every_connection(tmp_path: Any) -> None:
    from tests.support.tls import server_tls

    ca_file, context = server_tls(tmp_path, "127.0.0.1")
    async with FakeUpstream(ssl=context) as fake:
        transport = Http11Transport(verify=str(ca_file), keepalive_expiry=0)
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):  # no keep-alive: a new TLS connection each time
                assert (await client.get(f"{fake.url}/v1/models")).status_code == 200
        assert fake.connections == 3
        assert transport._ssl is not None
        first = transport._ssl
        assert transport._tls() is first
