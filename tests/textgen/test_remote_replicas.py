"""Several servers behind one model id, against fake upstreams on loopback: routing, failover
and its retry rule, ejection and probes, DNS discovery, credentials, TLS and a proxy.

The fakes stand in where real vLLM servers cannot fail on demand (a connection closed before
an answer, a 500, a keep-alive race) or hold answers while the test counts them; the same
behaviour against three real vLLM servers is in test_remote_replicas_vllm.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support.proxies import FakeProxy
from tests.support.tls import server_tls
from tests.support.upstreams import FakeUpstream, eventually, free_port, remote_textgen
from textgen import (
    BackendDown,
    BackendUnavailable,
    OpenAIRequest,
    TextGen,
)
from textgen.engines.replicas import ReplicaSet
from textgen.errors import ResponseNotFound

MODEL = "fake/tiny-7b"


# Short back-offs (probes within a second), no load reading unless a test asks for it.
textgen = partial(remote_textgen, REMOTE_READ_TIMEOUT_SECONDS=5.0, REMOTE_EJECT_SECONDS=0.3,
                  REMOTE_EJECT_MAX_SECONDS=0.6, REMOTE_LOAD_METRICS_INTERVAL_SECONDS=0)


@contextlib.asynccontextmanager
async def fakes(n: int = 3, mode: str = "ok", **kwargs: Any) -> AsyncIterator[list[FakeUpstream]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(FakeUpstream(mode, **kwargs)) for _ in range(n)]


def completion(prompt: str = "The capital of France is", **body: Any) -> OpenAIRequest:
    return OpenAIRequest("completions", {"model": MODEL, "prompt": prompt, **body},
                         read_cache=False, write_cache=False)


def replica_set(tg: TextGen) -> ReplicaSet:
    engine = tg.models.engine_for(MODEL)
    assert isinstance(engine, ReplicaSet)
    return engine


def states(tg: TextGen) -> dict[str, str]:
    return {r.url: r.status for r in tg.model_info(MODEL).replicas}


def counter(tg: TextGen, name: str, **labels: str) -> float:
    return tg.metrics.registry.get_sample_value(name, labels) or 0.0


# --- one model, several servers -----------------------------------------------------------


async def test_servers_serving_one_model_id_are_its_replicas() -> None:
    async with fakes(3) as (a, b, c), textgen(a.url, b.url, c.url) as tg:
        info = tg.model_info(MODEL)
        assert (info.status, info.backend, info.routing) == ("loaded", "remote",
                                                             "least_outstanding")
        assert sorted(r.url for r in info.replicas) == sorted([a.url, b.url, c.url])
        assert {r.status for r in info.replicas} == {"up"}
        health = tg.health()["remote_backends"]
        assert health["status"] == "ok"
        assert [b["replicas"][0]["status"] for b in health["backends"]] == ["up"] * 3
        assert tg.metrics.registry.get_sample_value(
            "text_backend_replicas", {"backend": a.url, "state": "up"}) == 1


async def test_least_outstanding_gives_each_replica_its_share_of_a_burst() -> None:
    async with fakes(3, "hold") as servers, textgen(*(f.url for f in servers)) as tg:
        requests = [asyncio.create_task(tg.complete(completion(f"p{i}"))) for i in range(6)]
        await eventually(lambda: sum(len(f.bodies) for f in servers) == 6)
        assert [len(f.bodies) for f in servers] == [2, 2, 2]
        assert [r.in_flight for r in tg.model_info(MODEL).replicas] == [2, 2, 2]
        for fake in servers:
            fake.release.set()
        await asyncio.gather(*requests)
        assert replica_set(tg).in_flight() == 0


async def test_round_robin_takes_each_replica_in_turn() -> None:
    async with fakes(3) as servers, textgen(*(f.url for f in servers),
                                            REMOTE_ROUTING_POLICY="round_robin") as tg:
        for i in range(6):
            await tg.complete(completion(f"p{i}"))
        assert [len(f.bodies) for f in servers] == [2, 2, 2]


async def test_prefix_affinity_keeps_a_system_prompt_on_one_replica() -> None:
    systems = [f"You are assistant number {i}. " * 12 for i in range(8)]
    async with fakes(3) as servers, textgen(*(f.url for f in servers),
                                            REMOTE_ROUTING_POLICIES={MODEL: "prefix_affinity"}
                                            ) as tg:
        assert tg.model_info(MODEL).routing == "prefix_affinity"
        for question in range(3):
            for system in systems:
                request = OpenAIRequest("chat", {"model": MODEL, "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"question {question}"}]}, read_cache=False)
                await tg.complete(request)
        homes: dict[str, set[int]] = {}
        for i, fake in enumerate(servers):
            for body in fake.bodies:
                homes.setdefault(body["messages"][0]["content"], set()).add(i)
        assert all(len(home) == 1 for home in homes.values()), homes  # never split
        assert len({next(iter(h)) for h in homes.values()}) > 1  # but spread over replicas


async def test_the_servers_own_queue_counts_as_load() -> None:
    async with fakes(3, "hold") as servers, textgen(
        *(f.url for f in servers), REMOTE_LOAD_METRICS_INTERVAL_SECONDS=0.1
    ) as tg:
        servers[0].waiting, servers[0].running = 3, 2  # another API replica's requests
        busy = servers[0].url
        await eventually(lambda: next(r for r in tg.model_info(MODEL).replicas
                                      if r.url == busy).waiting == 3)
        requests = [asyncio.create_task(tg.complete(completion(f"p{i}"))) for i in range(4)]
        await eventually(lambda: sum(len(f.bodies) for f in servers) == 4)
        assert [len(f.bodies) for f in servers] == [0, 2, 2]
        replica = next(r for r in tg.model_info(MODEL).replicas if r.url == busy)
        assert (replica.running, replica.kv_cache_usage, replica.prefix_cache_hit_rate) == (
            2, 0.25, 0.4)
        for fake in servers:
            fake.release.set()
        await asyncio.gather(*requests)


# --- failover -----------------------------------------------------------------------------


async def test_a_replica_that_refuses_connections_is_skipped_without_a_failed_request() -> None:
    port = free_port()
    async with fakes(2) as (a, b):
        c = await FakeUpstream(port=port).start()
        async with textgen(a.url, b.url, c.url, REMOTE_ROUTING_POLICY="round_robin") as tg:
            await c.stop()  # dies between requests: its pooled connection is gone too
            for i in range(9):
                result = await tg.complete(completion(f"p{i}"))
                assert result["choices"][0]["text"] == "Paris is the capital"
            assert len(a.bodies) + len(b.bodies) == 9
            assert states(tg)[c.url] == "down"
            assert tg.model_info(MODEL).status == "loaded"  # two of three still serve it
            assert tg.health()["remote_backends"]["status"] == "degraded"
            assert counter(tg, "text_backend_retries_total", backend=c.url) >= 1
            assert counter(tg, "text_backend_errors_total", backend=c.url,
                           error_type="backend_down") >= 1

            c = await FakeUpstream(port=port).start()  # back: probed in after its back-off
            try:
                await eventually(lambda: states(tg)[c.url] == "up", within=5)
                for i in range(6):
                    await tg.complete(completion(f"q{i}"))
                assert len(c.bodies) == 2
            finally:
                await c.stop()


def response_request(previous: str | None = None, **body: Any) -> OpenAIRequest:
    return OpenAIRequest("responses", {"model": MODEL, "input": "Hi",
                                       "previous_response_id": previous, **body},
                         read_cache=False, write_cache=False)


async def test_a_stored_response_is_continued_on_the_replica_that_keeps_it() -> None:
    # Round robin would send each request to the next replica, where vLLM's per-server
    # store has no such response (a 404).
    async with fakes(3) as servers, textgen(*(f.url for f in servers),
                                            REMOTE_ROUTING_POLICY="round_robin") as tg:
        previous = (await tg.complete(response_request()))["id"]
        home = next(f for f in servers if previous in f.stored)
        for turn in range(6):
            if turn % 2:  # streamed: the first event names the response
                stream = await tg.open(response_request(previous, stream=True))
                events = [event async for event in stream.chunks()]
                previous = events[-1]["response"]["id"]
            else:
                previous = (await tg.complete(response_request(previous)))["id"]
            assert previous in home.stored
        continued = [(i, b["previous_response_id"]) for i, f in enumerate(servers)
                     for b in f.bodies if b.get("previous_response_id")]
        assert len(continued) == 6 and {i for i, _ in continued} == {servers.index(home)}
        # A request that continues nothing is routed as any other.
        for _ in range(3):
            await tg.complete(response_request())
        assert all(f.bodies for f in servers if f is not home)
        # Stateless responses are kept nowhere: not remembered either.
        stateless = (await tg.complete(response_request(store=False)))["id"]
        assert previous in replica_set(tg)._made_by and stateless not in replica_set(tg)._made_by
        # The keeper gone, its responses cannot be continued elsewhere: a 503 that says why,
        # first from the refused connection, then at once (known down, nothing is sent).
        await home.stop()
        with pytest.raises(BackendDown, match="stored the response"):
            await tg.complete(response_request(previous))
        sent = sum(len(f.bodies) for f in servers)
        with pytest.raises(BackendDown, match="stored the response"):
            await tg.complete(response_request(previous))
        assert sum(len(f.bodies) for f in servers) == sent
        # Scaled away for good: its store went with it, vLLM's 404.
        replicas = replica_set(tg)
        replicas.remove(next(r for r in replicas.replicas if r.url == home.url))
        with pytest.raises(ResponseNotFound, match="no longer serves"):
            await tg.complete(response_request(previous))


async def test_a_response_this_lab_did_not_pass_on_is_sought_among_the_replicas() -> None:
    # Another instance of the lab (or this one before a restart) made it: routed by the
    # policy, and on vLLM's 404 asked of the other replicas until one keeps it.
    async with fakes(3) as servers:
        async with textgen(*(f.url for f in servers)) as first_lab:
            made = (await first_lab.complete(response_request()))["id"]
        home = next(f for f in servers if made in f.stored)
        for _ in range(3):
            async with textgen(*(f.url for f in servers),
                               REMOTE_ROUTING_POLICY="round_robin") as other_lab:
                answer = await other_lab.complete(response_request(made))
                assert answer["previous_response_id"] == made
                assert answer["id"] in home.stored
        # One the replicas do not keep at all is vLLM's 404, passed on.
        async with textgen(*(f.url for f in servers)) as other_lab:
            with pytest.raises(ResponseNotFound, match="not found"):
                await other_lab.complete(response_request("resp_nowhere"))


async def test_every_replica_down_is_a_fast_503() -> None:
    ports = [free_port(), free_port()]
    servers = [await FakeUpstream(port=p).start() for p in ports]
    async with textgen(*(f.url for f in servers), REMOTE_CONNECT_TIMEOUT_SECONDS=10.0) as tg:
        for fake in servers:
            await fake.stop()
        started = time.monotonic()
        messages = []
        for _ in range(3):
            with pytest.raises(BackendDown) as caught:
                await tg.complete(completion())
            messages.append(caught.value.message)
        assert time.monotonic() - started < 2.0
        # Each replica is tried until it is known down (a pooled connection the server closed
        # is a keep-alive race, not yet proof); then the refusal needs no round trip.
        assert "cannot be reached" in messages[0] and "unavailable" in messages[-1]
        info = tg.model_info(MODEL)
        assert info.status == "error" and "all 2 replicas are down" in (info.reason or "")


@pytest.mark.parametrize("mode", ["drop", "cut", "error500"])
async def test_a_request_that_reached_a_server_is_never_sent_again(mode: str) -> None:
    """Closed on a fresh connection without an answer, cut mid-answer, or a 500: the server
    may have started generating, so the request fails rather than run twice."""
    async with fakes(2, mode) as (a, b), textgen(a.url, b.url) as tg:
        for fake in (a, b):  # no idle connection left from discovery: a fresh one is used
            fake.drop_connections()
        await eventually(lambda: a.open_connections + b.open_connections == 0)
        await asyncio.sleep(0.05)  # the client has seen them close
        with pytest.raises(BackendUnavailable):
            await tg.complete(completion())
        reached = a.dropped + b.dropped + len(a.bodies) + len(b.bodies)
        assert reached == 1
        assert counter(tg, "text_backend_retries_total", backend=a.url) == 0
        assert counter(tg, "text_backend_retries_total", backend=b.url) == 0


async def test_a_stream_cut_by_a_dying_replica_fails_and_is_not_sent_again() -> None:
    async with fakes(2, "cut") as (a, b), textgen(a.url, b.url) as tg:
        chunks: list[dict[str, Any]] = []
        with pytest.raises(BackendUnavailable):
            async for chunk in tg.stream(completion()):
                chunks.append(chunk)
        assert len(chunks) == 1 and len(a.bodies) + len(b.bodies) == 1
        assert "ejected" in states(tg).values()


async def test_a_keep_alive_race_is_sent_again_on_a_new_connection() -> None:
    """The server closes an idle connection as a request arrives on it: it never read it."""
    async with FakeUpstream("drop_reused") as fake, textgen(fake.url) as tg:
        for i in range(3):  # every request after the first comes to a reused connection
            result = await tg.complete(completion(f"p{i}"))
            assert result["choices"][0]["text"] == "Paris is the capital"
        assert fake.dropped >= 2 and len(fake.bodies) == 3
        assert states(tg)[fake.url] == "up"  # a race, not a failure
        assert counter(tg, "text_backend_retries_total", backend=fake.url) == fake.dropped


async def test_a_5xx_ejects_the_replica_until_a_probe_brings_it_back() -> None:
    async with fakes(2) as (a, b), textgen(a.url, b.url,
                                           REMOTE_ROUTING_POLICY="round_robin") as tg:
        a.mode = "error500"
        failed = 0
        for i in range(4):
            try:
                await tg.complete(completion(f"p{i}"))
            except BackendUnavailable:
                failed += 1
        assert failed == 1 and len(b.bodies) == 3  # one 500, then a went out of rotation
        assert states(tg)[a.url] == "ejected"
        assert "HTTP 500" in next(r.error for r in tg.model_info(MODEL).replicas
                                  if r.url == a.url)
        a.mode = "ok"
        await eventually(lambda: states(tg)[a.url] == "up", within=3)


async def test_an_ejected_replica_still_serves_when_it_is_the_only_one() -> None:
    async with FakeUpstream("error500") as fake, textgen(fake.url) as tg:
        for _ in range(2):  # a 502 each time, not a 503 until the next probe
            with pytest.raises(BackendUnavailable, match="HTTP 500"):
                await tg.complete(completion())
        assert len(fake.bodies) == 2


# --- discovery through DNS ----------------------------------------------------------------


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """A resolver stub: names in the dict resolve to their addresses, others as usual."""
    names: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            if not names[host]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))
                    for address in names[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield names


async def test_a_name_with_several_addresses_is_expanded_into_replicas(
    dns: dict[str, list[str]],
) -> None:
    port = free_port()
    dns["vllm-headless.test"] = ["127.0.0.2", "127.0.0.3"]
    async with contextlib.AsyncExitStack() as stack:
        servers = {host: await stack.enter_async_context(FakeUpstream(host=host, port=port))
                   for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4")}
        async with textgen(f"http://vllm-headless.test:{port}/v1/completions",
                           REMOTE_DNS_INTERVAL_SECONDS=0.1) as tg:
            urls = {f"http://127.0.0.{i}:{port}" for i in (2, 3)}
            assert {r.url for r in tg.model_info(MODEL).replicas} == urls
            [backend] = tg.health()["remote_backends"]["backends"]
            assert backend["url"] == f"http://vllm-headless.test:{port}"
            assert {r["url"] for r in backend["replicas"]} == urls
            for i in range(4):
                await tg.complete(completion(f"p{i}"))
            assert [len(servers[h].bodies) for h in servers] == [2, 2, 0]
            # The Host header names the service, as it would without the expansion.
            assert servers["127.0.0.2"].headers[-1]["host"] == f"vllm-headless.test:{port}"

            dns["vllm-headless.test"] = ["127.0.0.3", "127.0.0.4"]  # a pod replaced
            new = {f"http://127.0.0.{i}:{port}" for i in (3, 4)}
            await eventually(lambda: {r.url for r in tg.model_info(MODEL).replicas} == new)
            for i in range(4):
                await tg.complete(completion(f"q{i}"))
            assert [len(servers[h].bodies) for h in servers] == [2, 4, 2]

            dns["vllm-headless.test"] = []  # the resolver fails: the servers we know stay
            await asyncio.sleep(0.3)
            assert {r.url for r in tg.model_info(MODEL).replicas} == new


async def test_a_name_that_does_not_resolve_is_a_backend_down(dns: dict[str, list[str]]) -> None:
    dns["nowhere.test"] = []
    async with textgen("http://nowhere.test:8000") as tg:
        [backend] = tg.health()["remote_backends"]["backends"]
        assert backend["status"] == "down" and "does not resolve" in backend["error"]
        assert backend["replicas"] == []


# --- credentials, TLS, proxy --------------------------------------------------------------


async def test_the_api_key_goes_upstream_and_never_out() -> None:
    async with FakeUpstream(api_key="sk-upstream") as fake, textgen(
        fake.url, VLLM_API_KEY="sk-upstream"
    ) as tg:
        await tg.complete(completion())
        assert fake.headers[-1]["authorization"] == "Bearer sk-upstream"


async def test_a_backend_with_a_key_of_its_own(tmp_path: Path) -> None:
    async with fakes(2) as (a, b):
        a.api_key = "key-a"
        async with textgen(a.url, b.url, VLLM_API_KEY="key-b",
                           VLLM_API_KEYS={f"{a.url}/v1/completions": "key-a"}) as tg:
            for i in range(2):
                await tg.complete(completion(f"p{i}"))
        assert a.headers[-1]["authorization"] == "Bearer key-a"
        assert b.headers[-1]["authorization"] == "Bearer key-b"


async def test_credentials_in_the_url_are_basic_auth_and_redacted_everywhere() -> None:
    port = free_port()
    url = f"http://alice:s3cret@127.0.0.1:{port}/v1/completions"
    fake = await FakeUpstream(port=port).start()
    async with textgen(url, REMOTE_DISCOVERY_INTERVAL_SECONDS=0.2) as tg:
        await tg.complete(completion())
        assert fake.headers[-1]["authorization"] == "Basic YWxpY2U6czNjcmV0"
        await fake.stop()
        with pytest.raises(BackendDown) as caught:
            await tg.complete(completion())
        seen = [caught.value.message, str(tg.health()), str(tg.model_info(MODEL)),
                _exposition(tg)]
        for text in seen:
            assert "s3cret" not in text and "alice" not in text
        assert f"http://127.0.0.1:{port}" in caught.value.message
        assert f'backend="http://127.0.0.1:{port}"' in _exposition(tg)


async def test_wrong_upstream_credentials_are_a_502_that_says_so() -> None:
    async with FakeUpstream(api_key="right") as fake, textgen(fake.url, VLLM_API_KEY="right") as tg:
        fake.api_key = "rotated"  # the server's key changed under us
        with pytest.raises(BackendUnavailable, match="refused our credentials") as caught:
            await tg.complete(completion())
        assert type(caught.value) is BackendUnavailable and "HTTP 401" in caught.value.message
        assert states(tg)[fake.url] == "up"  # not the server's fault: it stays in rotation
        await tg.backends.discover()  # /v1/models is refused too: down, with the reason
        [backend] = tg.health()["remote_backends"]["backends"]
        assert backend["status"] == "down" and "refused our credentials" in backend["error"]
        assert "right" not in str(tg.health()) and "rotated" not in str(tg.health())


def _exposition(tg: TextGen) -> str:
    from prometheus_client import generate_latest

    return generate_latest(tg.metrics.registry).decode()


async def test_https_backend_verified_against_a_ca_file(tmp_path: Path,
                                                        dns: dict[str, list[str]]) -> None:
    ca_file, context = server_tls(tmp_path, "vllm.test")
    dns["vllm.test"] = ["127.0.0.1"]
    async with FakeUpstream(ssl=context) as fake:
        url = f"https://vllm.test:{fake.port}"
        async with textgen(url, REMOTE_TLS_CA_FILE=str(ca_file)) as tg:
            result = await tg.complete(completion())
            assert result["choices"][0]["text"] == "Paris is the capital"
            # Connected to the address, the certificate checked against the name.
            assert [r.url for r in tg.model_info(MODEL).replicas] == [
                f"https://127.0.0.1:{fake.port}"]
        async with textgen(url) as tg:  # the system's CAs do not know ours
            [backend] = tg.health()["remote_backends"]["backends"]
            assert backend["status"] == "down" and "certificate" in backend["error"]
        async with textgen(url, REMOTE_TLS_VERIFY=False) as tg:
            assert tg.model_info(MODEL).status == "loaded"


async def test_the_engine_panel_reads_a_server_as_its_requests_reach_it(
        tmp_path: Path, dns: dict[str, list[str]]) -> None:
    """Over the server's own pool (the reader routing's load uses too): at its address, the
    certificate checked against its name and our CA file."""
    ca_file, context = server_tls(tmp_path, "vllm.test")
    dns["vllm.test"] = ["127.0.0.1"]
    async with FakeUpstream(ssl=context) as fake:
        fake.running, fake.waiting = 2, 3
        async with textgen(f"https://vllm.test:{fake.port}",
                           REMOTE_TLS_CA_FILE=str(ca_file)) as tg:
            [reading] = await tg.engine_stats()
            assert (reading.source, reading.error) == (f"https://127.0.0.1:{fake.port}", None)
            assert (reading.running, reading.waiting, reading.kv_cache_usage) == (2, 3, 0.25)
            fake.metrics_status = 500
            [reading] = await tg.engine_stats()
            assert (reading.model, reading.error) == (MODEL,
                                                      "/metrics unreadable (HTTPStatusError)")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_backends_through_a_proxy(tls: bool, tmp_path: Path) -> None:
    context = None
    overrides: dict[str, object] = {}
    if tls:
        ca_file, context = server_tls(tmp_path, "127.0.0.1")
        overrides["REMOTE_TLS_CA_FILE"] = str(ca_file)
    async with FakeUpstream(ssl=context) as fake, FakeProxy() as proxy:
        proxy_url = proxy.url.replace("http://", "http://user:pw@")
        async with textgen(fake.url, REMOTE_PROXY=proxy_url, **overrides) as tg:
            for i in range(2):
                await tg.complete(completion(f"p{i}"))
            assert len(fake.bodies) == 2
        target = f"127.0.0.1:{fake.port}"
        if tls:
            assert proxy.requests == [f"CONNECT {target}"]  # one tunnel, kept alive
        else:
            assert proxy.requests == [f"GET http://{target}/v1/models",
                                      f"GET http://{target}/openapi.json",  # its model's kind
                                      f"POST http://{target}/v1/completions",
                                      f"POST http://{target}/v1/completions"]
        assert set(proxy.auth) == {"Basic dXNlcjpwdw=="}


# --- interrupting -------------------------------------------------------------------------


async def test_interrupt_ends_open_streams_with_the_error() -> None:
    from textgen import GenerationInterrupted

    async with FakeUpstream("hold") as fake, textgen(fake.url) as tg:
        generation = await tg.open(completion(stream=True))
        chunks = generation.chunks()
        await anext(chunks)
        await asyncio.wait_for(fake.holding.wait(), 5)
        await tg.interrupt(GenerationInterrupted("The lab is stopping; retry."))
        with pytest.raises(GenerationInterrupted):
            await anext(chunks)
        await asyncio.wait_for(fake.disconnected.wait(), 5)
        assert replica_set(tg).in_flight() == 0
