"""The keep-alive HTTP/1.1 transport under each backend's httpx client, against fake upstreams."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.upstreams import FakeUpstream, eventually
from textgen.engines.http11 import Http11Transport


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
