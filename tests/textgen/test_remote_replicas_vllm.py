"""Three real vLLM servers on loopback as replicas of one model id: routing, failover, DNS.

The servers (vLLM's own OpenAI server on the embedded SmolLM2, prefix caching on) listen on
127.0.0.1, 127.0.0.2 and 127.0.0.3 at one port, as the pods of a Kubernetes Deployment do
behind a headless Service. They cost ~3.3 GB each and start slowly on two cores, so they are
started once, together, for this module and stopped at its end; requests stay few and short.
What each server did is read from its own Prometheus counters, not from the lab's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.support.upstreams import VllmServer, free_port, remote_textgen
from textgen import BackendUnavailable, OpenAIRequest, TextGen
from textgen.engines.replicas import ReplicaSet

pytestmark = pytest.mark.engine

MODEL = VllmServer.model
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="module")
def servers() -> Iterator[list[VllmServer]]:
    port = free_port()
    started = [VllmServer.start(host=host, port=port, args=("--enable-prefix-caching",),
                                wait=False) for host in HOSTS]
    try:
        for server in started:
            server.wait_ready(420)
        yield started
    finally:
        for server in started:
            server.stop()


@contextlib.asynccontextmanager
async def lab(*urls: str, **overrides: object) -> AsyncIterator[TextGen]:
    values: dict[str, object] = {
        "REMOTE_CONNECT_TIMEOUT_SECONDS": 2.0, "REMOTE_READ_TIMEOUT_SECONDS": 120.0,
        "REMOTE_REQUEST_TIMEOUT_SECONDS": 300.0, "REMOTE_EJECT_SECONDS": 1.0,
        "REMOTE_EJECT_MAX_SECONDS": 2.0, "REMOTE_DISCOVERY_INTERVAL_SECONDS": 30.0,
    }
    async with remote_textgen(*urls, **{**values, **overrides}) as tg:
        yield tg


def replica_set(tg: TextGen) -> ReplicaSet:
    engine = tg.models.engine_for(MODEL)
    assert isinstance(engine, ReplicaSet)
    return engine


async def counters(servers: list[VllmServer], name: str) -> list[float]:
    return [await asyncio.to_thread(s.metric, name) for s in servers]


def completion(prompt: str, max_tokens: int, **body: Any) -> OpenAIRequest:
    return OpenAIRequest("completions", {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens,
                                         "temperature": 0, **body}, read_cache=False,
                         write_cache=False)


async def test_least_outstanding_gives_each_replica_two_of_six_long_generations(
    servers: list[VllmServer],
) -> None:
    async with lab(*(s.url for s in servers)) as tg:
        info = tg.model_info(MODEL)
        assert sorted(r.url for r in info.replicas) == sorted(s.url for s in servers)
        assert {r.status for r in info.replicas} == {"up"}
        before = await counters(servers, "vllm:request_success_total")
        runs = [asyncio.create_task(tg.complete(completion(f"Story {i}: Once upon a time", 48,
                                                           ignore_eos=True)))
                for i in range(6)]
        replicas = replica_set(tg).replicas
        deadline = time.monotonic() + 10
        while sum(r.in_flight() for r in replicas) < 6:  # all six sent, none done (48 tokens)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert [r.in_flight() for r in replicas] == [2, 2, 2]
        results = await asyncio.gather(*runs)
        assert all(r["usage"]["completion_tokens"] == 48 for r in results)
        after = await counters(servers, "vllm:request_success_total")
        assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2, 2]


def _system_prompt(seed: int) -> str:
    """A long system prompt (~600 tokens, several of vLLM's KV blocks) of its own."""
    words = ["river", "stone", "market", "lantern", "harvest", "quiet", "engine", "orbit",
             "copper", "meadow", "signal", "winter", "garden", "ledger", "harbor", "violet",
             "summit", "thread", "canyon", "beacon"]
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(words) for _ in range(12)).capitalize() + "."
                 for _ in range(45)]
    return f"You are assistant number {seed}. Follow these notes. " + " ".join(sentences)


async def _hit_rate(tg: TextGen, servers: list[VllmServer], salt: int) -> float:
    """4 long system prompts x 3 questions, one at a time; vLLM's own prefix-cache counters."""
    systems = [_system_prompt(salt * 10 + i) for i in range(4)]
    hits = await counters(servers, "vllm:prefix_cache_hits_total")
    queries = await counters(servers, "vllm:prefix_cache_queries_total")
    for question in ("What is the first word?", "Name a colour.", "Say hello."):
        for system in systems:
            request = OpenAIRequest("chat", {"model": MODEL, "max_tokens": 2, "temperature": 0,
                                             "messages": [{"role": "system", "content": system},
                                                          {"role": "user", "content": question}]},
                                    read_cache=False, write_cache=False)
            await tg.complete(request)
    hits = [a - b for a, b in zip(await counters(servers, "vllm:prefix_cache_hits_total"), hits,
                                  strict=True)]
    queries = [a - b for a, b in zip(
        await counters(servers, "vllm:prefix_cache_queries_total"), queries, strict=True)]
    return sum(hits) / sum(queries)


async def test_prefix_affinity_hits_the_prefix_cache_more_than_round_robin(
    servers: list[VllmServer],
) -> None:
    urls = [s.url for s in servers]
    async with lab(*urls, REMOTE_ROUTING_POLICY="round_robin") as tg:
        round_robin = await _hit_rate(tg, servers, salt=1)
    async with lab(*urls, REMOTE_ROUTING_POLICY="prefix_affinity") as tg:
        affinity = await _hit_rate(tg, servers, salt=2)
    # Round robin sends each system prompt's questions to three replicas, so each computes it;
    # affinity computes it once and reads it from the cache for the next two questions.
    assert affinity > round_robin + 0.3, (affinity, round_robin)
    assert affinity > 0.5


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A resolver stub: these names resolve to their addresses, any other as usual."""
    names: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port)))
                    for a in names[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


async def test_a_dns_name_with_several_addresses_is_expanded_into_replicas(
    servers: list[VllmServer], dns: dict[str, list[str]],
) -> None:
    port = servers[0].url.rsplit(":", 1)[1]
    dns["vllm-headless.test"] = ["127.0.0.2", "127.0.0.3"]
    async with lab(f"http://vllm-headless.test:{port}/v1/completions") as tg:
        assert sorted(r.url for r in tg.model_info(MODEL).replicas) == [
            f"http://127.0.0.2:{port}", f"http://127.0.0.3:{port}"]
        [backend] = tg.health()["remote_backends"]["backends"]
        assert (backend["url"], backend["status"]) == (f"http://vllm-headless.test:{port}", "up")
        before = await counters(servers, "vllm:request_success_total")
        await asyncio.gather(*(tg.complete(completion(f"Hello {i}", 4)) for i in range(2)))
        after = await counters(servers, "vllm:request_success_total")
        assert [a - b for a, b in zip(after, before, strict=True)] == [0, 1, 1]


async def kept_by(servers: list[VllmServer], response_id: str) -> list[int]:
    """Each server's status for GET /v1/responses/{id}: 200 where its store keeps it."""
    async with httpx.AsyncClient(timeout=30) as client:
        return [(await client.get(f"{s.url}/v1/responses/{response_id}")).status_code
                for s in servers]


async def test_a_conversation_of_stored_responses_stays_on_the_replica_that_keeps_it(
    servers: list[VllmServer],
) -> None:
    async def turn(tg: TextGen, number: int, previous: str | None) -> str:
        body = {"model": MODEL, "input": f"Say a word ({number}).", "max_output_tokens": 4,
                "temperature": 0, "previous_response_id": previous}
        response = await tg.complete(OpenAIRequest("responses", body, read_cache=False,
                                                   write_cache=False))
        assert response["status"] in ("completed", "incomplete") and response["output"]
        return response["id"]  # type: ignore[no-any-return]

    # Round robin sends each new request to the next server; vLLM's store is per server.
    urls = [s.url for s in servers]
    async with lab(*urls, REMOTE_ROUTING_POLICY="round_robin") as tg:
        previous = None
        for number in range(4):
            previous = await turn(tg, number, previous)
    # Each turn continued the last (a 404 anywhere else would have failed it): the whole
    # conversation was made on one server, whose store alone keeps it.
    kept = await kept_by(servers, previous)
    assert sorted(kept) == [200, 404, 404], kept
    # Another lab in front of the same servers never saw it: it finds the keeper.
    async with lab(*urls, REMOTE_ROUTING_POLICY="round_robin") as other:
        for number in range(4, 6):
            previous = await turn(other, number, previous)
    assert await kept_by(servers, previous) == kept


async def test_a_replica_killed_during_a_run_fails_no_request_and_comes_back(
    servers: list[VllmServer],
) -> None:
    by_url = {s.url: s for s in servers}
    async with lab(*by_url) as tg:
        replicas = replica_set(tg)
        # A long stream first: the replica that holds it is the one that will die.
        generation = await tg.open(completion("Once upon a time", 1500, ignore_eos=True,
                                              stream=True))
        chunks = generation.chunks()
        await anext(chunks)
        victim = next(r for r in replicas.replicas if r.in_flight() == 1)
        failures: list[BaseException] = []
        done = 0

        async def worker(n: int) -> None:
            nonlocal done
            for i in range(n):
                try:
                    await tg.complete(completion(f"Question {i}: the sky is", 6))
                    done += 1
                except BaseException as exc:  # counted, not raised: the run goes on
                    failures.append(exc)

        workers = [asyncio.create_task(worker(6)) for _ in range(3)]
        # Polled: the moment wanted is one where only the stream is on the victim.
        while done < 4 or victim.in_flight() != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        assert done < 18  # mid-run
        by_url[victim.url].kill()  # SIGKILL: the server and its engine core, mid-stream
        killed_at = time.monotonic()

        with pytest.raises(BackendUnavailable):  # the stream ends with an error
            async for _ in chunks:
                pass
        await asyncio.gather(*workers)
        assert failures == [] and done == 18
        while victim.state != "down":  # shown down within a few seconds
            assert time.monotonic() - killed_at < 5
            await asyncio.sleep(0.1)
        state = {r["url"]: r["status"] for b in tg.health()["remote_backends"]["backends"]
                 for r in b["replicas"]}
        assert state[victim.url] == "down" and tg.model_info(MODEL).status == "loaded"

        await asyncio.to_thread(by_url[victim.url].restart, 420)
        deadline = time.monotonic() + 30
        while victim.state != "up":  # probed back in, no restart of ours
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await asyncio.gather(*(tg.complete(completion(f"After {i}", 4)) for i in range(3)))
        assert await asyncio.to_thread(by_url[victim.url].metric,
                                       "vllm:request_success_total") >= 1
