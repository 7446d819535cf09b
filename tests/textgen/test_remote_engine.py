"""RemoteServer and remote backends in the core, against fake upstreams on loopback.

The fakes stand in where a real vLLM cannot misbehave on demand (down, slow, garbage, a stream
cut short) or hold an answer while the test looks; the answers of a real vLLM server are checked
in tests/api/test_remote_vllm.py.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.upstreams import (
    FakeUpstream,
    eventually,
    free_port,
    remote_settings,
    remote_textgen,
)
from textgen import (
    BackendDown,
    BackendTimeout,
    BackendUnavailable,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    OpenAIRequest,
    RequestRejected,
    Settings,
    TextGen,
)
from textgen.answer import is_usage_chunk
from textgen.engines.endpoint import Endpoint, redact
from textgen.engines.remote import RemoteServer, base_url, guess_spec
from textgen.engines.replicas import ReplicaSet
from textgen.remote_endpoints import endpoints

MODEL = "fake/tiny-7b"
# Fields the lab has no code for: they must reach the upstream as the client wrote them.
UNKNOWN = {
    "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}},
    "some_future_field": {"nested": [1, 2.5, None, "x"]},
    "min_p": 0.05,
    "top_k": 5,
    "seed": 3,
    "stop": ["\n"],
}
TOOLS = [{"type": "function", "function": {"name": "capital", "parameters": {"type": "object"}}}]


settings = remote_settings
textgen = remote_textgen


def completion(prompt: str = "The capital of France is", **body: Any) -> OpenAIRequest:
    return OpenAIRequest("completions", {"model": MODEL, "prompt": prompt, **body},
                         read_cache=False, write_cache=False)


def chat(content: str = "Hi", **body: Any) -> OpenAIRequest:
    messages = [{"role": "user", "content": content}]
    return OpenAIRequest("chat", {"model": MODEL, "messages": messages, **body},
                         read_cache=False, write_cache=False)


def backend_errors(tg: TextGen, url: str, code: str) -> float:
    value = tg.metrics.registry.get_sample_value(
        "text_backend_errors_total", {"backend": url, "error_type": code}
    )
    return value or 0.0


def engine_of(tg: TextGen) -> ReplicaSet:
    engine = tg.models.engine_for(MODEL)
    assert isinstance(engine, ReplicaSet)
    return engine


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://vllm:8000/v1/completions",
        "http://vllm:8000",
        "http://vllm:8000/",
        "http://vllm:8000/v1",
        "http://vllm:8000/v1/chat/completions",
    ],
)
def test_endpoint_accepts_the_seeds_completions_url_or_a_base_url(endpoint: str) -> None:
    assert base_url(endpoint) == "http://vllm:8000"


def test_endpoint_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        base_url("vllm:8000")


@pytest.mark.parametrize(
    ("url", "shown", "connect", "host_header", "authorization"),
    [
        ("http://vllm:8000/v1/completions", "http://vllm:8000", "http://vllm:8000", "vllm:8000",
         None),
        ("https://u:p%40ss@gpu.example/v1?api_key=sk-1", "https://gpu.example",
         "https://gpu.example:443", "gpu.example", "Basic dTpwQHNz"),
        ("http://[::1]:9000/", "http://[::1]:9000", "http://[::1]:9000", "[::1]:9000", None),
        ("http://gw:80/vllm-a/v1", "http://gw:80/vllm-a", "http://gw:80/vllm-a", "gw", None),
    ],
    ids=["seed", "credentials-and-query", "ipv6", "path-prefix"],
)
def test_an_endpoint_is_shown_without_credentials_and_reached_as_written(
    url: str, shown: str, connect: str, host_header: str, authorization: str | None,
) -> None:
    endpoint = Endpoint.parse(url)
    assert (endpoint.shown, endpoint.at(None), endpoint.host_header) == (shown, connect,
                                                                         host_header)
    assert endpoint.authorization == authorization
    assert "@" not in redact(url) and "?" not in redact(url)  # no credentials, no query


def test_an_api_key_wins_over_the_urls_password_and_an_address_keeps_the_name() -> None:
    endpoint = Endpoint.parse("https://u:p@vllm-headless:8443", api_key="sk-9")
    assert endpoint.authorization == "Bearer sk-9"
    server = RemoteServer(endpoint, "10.0.3.7")
    assert server.url == "https://10.0.3.7:8443"  # shown: the address, no credentials
    assert dict(server._client.headers)[b"host"] == b"vllm-headless:8443"
    assert server._client.extensions == {"sni_hostname": "vllm-headless"}  # TLS checks the name


def test_several_endpoints_from_a_json_or_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_ENDPOINT", "http://a:8000/v1/completions")
    monkeypatch.setenv("VLLM_ENDPOINTS", "http://b:8000, http://a:8000/v1")
    assert endpoints(Settings()) == ["http://a:8000", "http://b:8000"]
    monkeypatch.setenv("VLLM_ENDPOINTS", '["http://c:8000/v1/completions"]')
    assert endpoints(Settings()) == ["http://a:8000", "http://c:8000"]
    monkeypatch.setenv("VLLM_ENDPOINT", "")
    monkeypatch.setenv("VLLM_ENDPOINTS", "")
    assert endpoints(Settings()) == []


def test_the_seeds_endpoint_is_the_default() -> None:
    assert Settings().VLLM_ENDPOINT == "http://vllm:8000/v1/completions"


@pytest.mark.parametrize(
    ("model_id", "size_class", "instruct"),
    [
        ("acme/Llama-3-8B-Instruct", "13B", True),
        ("acme/falcon2-11b", "13B", False),
        ("acme/Mixtral-8x7B-v0.1", "70B", False),
        ("acme/gemma-2-2b-it", "7B", True),
        ("acme/qwen-72b-chat", "70B", True),
        ("no-size-in-this-name", "7B", False),
        ("meta-llama/Llama-2-13b-chat-hf", "13B", True),  # a catalog model keeps its entry
    ],
)
def test_unknown_models_get_a_size_class_from_their_name(
    model_id: str, size_class: str, instruct: bool
) -> None:
    spec = guess_spec(model_id)
    assert (spec.size_class, spec.instruct) == (size_class, instruct)


# --- discovery ----------------------------------------------------------------------------


async def test_discovered_models_join_the_registry_as_loaded_remote_models() -> None:
    async with (
        FakeUpstream(models=(MODEL, "meta-llama/Llama-2-13b-chat-hf")) as fake,
        textgen(fake.url + "/v1/completions") as tg,
    ):
        info = tg.model_info(MODEL)
        assert (info.status, info.backend, info.size_class, info.rate_limit) == (
            "loaded",
            "remote",
            "7B",
            100,
        )
        llama = tg.model_info("meta-llama/Llama-2-13b-chat-hf")
        assert (llama.status, llama.backend, llama.rate_limit) == ("loaded", "remote", 50)
        health = tg.health()["remote_backends"]
        assert health["status"] == "ok"
        [backend] = health["backends"]
        assert {k: backend[k] for k in ("url", "status", "models", "error")} == {
            "url": fake.url, "status": "up", "models": list(fake.models), "error": None}
        assert [(r["url"], r["status"], r["in_flight"]) for r in backend["replicas"]] == [
            (fake.url, "up", 0)]
        assert (info.routing, [r.url for r in info.replicas]) == ("least_outstanding", [fake.url])


@pytest.mark.parametrize(("runner", "shown"), [
    ("pooling", "pooling"), ("generate", "generate"),
    (None, "generate"),  # a server that cannot say (its docs off): a generator, as assumed
])
async def test_a_remote_model_is_the_kind_its_server_registered_routes_for(
        runner: str | None, shown: str) -> None:
    # Neither the name nor vLLM's model card says whether a model embeds or generates; the
    # routes its server registered do (/openapi.json).
    fake = FakeUpstream(models=("acme/e5-base-v2",))
    fake.runner = runner
    async with fake, textgen(fake.url) as tg:
        assert tg.model_info("acme/e5-base-v2").runner == shown


# --- pass-through -------------------------------------------------------------------------


@pytest.mark.parametrize("request_of", [completion, chat], ids=["completions", "chat"])
async def test_a_plain_request_goes_upstream_as_sent_and_its_json_comes_back(
    request_of: Any,
) -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        request = request_of(max_tokens=7, temperature=0.0, tools=TOOLS, **UNKNOWN)
        sent = copy.deepcopy(request.body)
        result = await tg.complete(request)
        # Every field as the client wrote it, nothing added: no `stream`, no `stream_options`.
        assert fake.bodies == [sent]
        assert request.body == sent  # and the client's own dict is left alone
        # The upstream's own object, as it sent it (its id, usage and fingerprint included).
        assert result == fake.answers[-1]
        assert result["usage"]["completion_tokens"] == 4
        assert fake.headers[-1]["accept"] == "application/json"


@pytest.mark.parametrize("request_of", [completion, chat], ids=["completions", "chat"])
@pytest.mark.parametrize(
    "options",
    [None, {}, {"include_usage": False}, {"include_usage": False, "continuous_usage_stats": True},
     {"include_usage": True}],
    ids=["absent", "empty", "false", "false-continuous", "true"],
)
async def test_a_stream_goes_upstream_as_sent_with_only_include_usage_forced(
    request_of: Any, options: dict[str, Any] | None
) -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        body: dict[str, Any] = {"stream": True, "max_tokens": 7, **UNKNOWN}
        if options is not None:
            body["stream_options"] = options
        request = request_of(**body)
        sent = copy.deepcopy(request.body)
        generation = await tg.open(request)
        chunks = [chunk async for chunk in generation.chunks()]

        assert fake.bodies == [{**sent, "stream_options": {**(options or {}),
                                                           "include_usage": True}}]
        assert request.body == sent
        assert fake.headers[-1]["accept"] == "text/event-stream"
        upstream = fake.answers[-1]
        assert is_usage_chunk(upstream[-1])
        if request.include_usage:
            assert chunks == upstream  # the usage chunk kept: the client asked for it
        else:
            # Dropped: the client did not ask for it; the system fingerprint it carried goes on
            # the last chunk instead, where vLLM puts it when usage is not asked for.
            fingerprint = upstream[-1]["system_fingerprint"]
            assert chunks == [*upstream[:-2], {**upstream[-2], "system_fingerprint": fingerprint}]
            assert not any("usage" in chunk for chunk in chunks)
        # Either way the lab counted the upstream's own tokens.
        assert (generation.prompt_tokens, generation.completion_tokens) == (4, 4)
        for kind in ("prompt", "completion"):
            assert tg.metrics.registry.get_sample_value(
                f"text_generation_{kind}_tokens_total", {"model": MODEL}) == 4


async def test_a_stream_without_usage_keeps_the_fingerprint_vllm_would_send() -> None:
    """vLLM puts system_fingerprint on the usage chunk when usage is asked for (the lab always
    asks) and on each choice's last chunk otherwise: the lab moves it back for the client."""
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        chunks = [chunk async for chunk in tg.stream(completion(stream=True))]
        assert chunks[-1].get("system_fingerprint") == "fake-fingerprint"
        assert chunks[-1]["choices"][0]["finish_reason"] is not None
        assert not any("system_fingerprint" in c for c in chunks[:-1])


async def test_the_engine_ends_a_stream_with_usage_whatever_the_client_asked() -> None:
    async with FakeUpstream() as fake:
        engine = RemoteServer(fake.url)
        try:
            reply = await engine.generate(completion(stream=True), "r2")
            assert reply.response is None and reply.chunks is not None
            chunks = [chunk async for chunk in reply.chunks]
            assert is_usage_chunk(chunks[-1]) and chunks[-1]["usage"]["completion_tokens"] == 4
            assert all(chunk["choices"] for chunk in chunks[:-1])
            assert fake.headers[-1]["x-request-id"] == "r2"
            assert engine.in_flight() == 0
        finally:
            await engine.close()


async def test_tokenize_goes_upstream_as_sent() -> None:
    async with FakeUpstream() as fake:
        engine = RemoteServer(fake.url)
        try:
            body = {"model": MODEL, "prompt": "one two three", "add_special_tokens": False}
            result = await engine.tokenize("/tokenize", body)
            assert fake.bodies == [body]
            assert (result["count"], result["tokens"]) == (3, [0, 1, 2])
        finally:
            await engine.close()


async def test_one_pooled_connection_is_kept_alive_across_requests() -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        for i in range(10):
            await tg.complete(completion(f"prompt {i}"))
            async for _ in tg.stream(completion(f"streamed {i}")):
                pass
        assert len(fake.bodies) == 20
        assert fake.connections == 1  # discovery and all 20 requests on one connection
        assert engine_of(tg).in_flight() == 0


async def test_chunks_are_passed_through_as_they_arrive() -> None:
    async with FakeUpstream("hold") as fake:
        engine = RemoteServer(fake.url, read_timeout=5.0)
        try:
            reply = await engine.generate(completion(stream=True), "r1")
            assert reply.chunks is not None
            first = await anext(reply.chunks)
            # The upstream holds the rest back until told: the first chunk came on its own.
            assert fake.holding.is_set()
            assert first["choices"][0]["text"] == "Paris"
            fake.release.set()
            rest = [chunk async for chunk in reply.chunks]
            assert [first, *rest] == fake.answers[-1]
        finally:
            await engine.close()


@pytest.mark.parametrize("read_first", [True, False], ids=["after-a-chunk", "before-any-chunk"])
async def test_closing_the_stream_closes_the_upstream_connection(read_first: bool) -> None:
    async with FakeUpstream("hold") as fake, textgen(fake.url) as tg:
        fake.hold_after = 1 if read_first else 0
        generation = await tg.open(completion(stream=True))
        await asyncio.wait_for(fake.holding.wait(), 5)
        assert fake.open_connections == 1 and engine_of(tg).in_flight() == 1
        if read_first:
            chunks = generation.chunks()
            await anext(chunks)
            await chunks.aclose()  # the client went away
        else:
            await generation.aclose()  # it went away before the first chunk
        await asyncio.wait_for(fake.disconnected.wait(), 5)
        await eventually(lambda: fake.open_connections == 0)
        assert fake.disconnects == 1
        assert engine_of(tg).in_flight() == 0
        assert tg.models.entry(MODEL).active == 0
        assert not fake.release.is_set()  # the upstream never got to finish


# --- the upstream's refusals --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_the_upstreams_own_400_is_passed_on_as_invalid_request(stream: bool) -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        fake.mode = "error400"
        with pytest.raises(InvalidRequest) as caught:
            await tg.open(completion(max_tokens=99999, stream=stream))
        assert (caught.value.message, caught.value.param) == (
            "fake upstream error 400",
            "max_tokens",
        )
        assert backend_errors(tg, fake.url, "invalid_request") == 0  # not the backend's fault
        assert tg.model_info(MODEL).status == "loaded"
        assert engine_of(tg).in_flight() == 0


@pytest.mark.parametrize("status", [422, 501])
async def test_other_refusals_keep_the_upstreams_status(status: int) -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        fake.mode = f"error{status}"
        with pytest.raises(RequestRejected) as caught:
            await tg.complete(completion())
        assert (caught.value.status, caught.value.message) == (
            status,
            f"fake upstream error {status}",
        )
        assert backend_errors(tg, fake.url, "request_rejected") == 0
        assert tg.model_info(MODEL).status == "loaded"


# --- failures and recovery ----------------------------------------------------------------


async def test_start_is_not_delayed_by_the_unreachable_default_endpoint() -> None:
    tg = TextGen(Settings(MODEL="", METRICS_PORT=0, REMOTE_CONNECT_TIMEOUT_SECONDS=1.0))
    await tg.start()
    try:
        # start() returned before discovery had an answer: the backend is not known yet.
        backend = tg.health()["remote_backends"]["backends"][0]
        assert (backend["url"], backend["status"]) == ("http://vllm:8000", "unknown")
        await asyncio.wait_for(tg.backends.wait_discovered(), 10)
        backend = tg.health()["remote_backends"]["backends"][0]
        assert backend["status"] == "down" and "cannot be reached" in backend["error"]
        assert tg.health()["remote_backends"]["status"] == "degraded"
    finally:
        await tg.close()


async def test_a_backend_that_goes_down_fails_fast_shows_why_and_recovers() -> None:
    port = free_port()
    fake = await FakeUpstream(port=port).start()
    # A connect timeout far above what a refused connection takes: failing fast is ours.
    async with textgen(fake.url, REMOTE_DISCOVERY_INTERVAL_SECONDS=0.2,
                       REMOTE_CONNECT_TIMEOUT_SECONDS=10.0) as tg:
        assert tg.model_info(MODEL).status == "loaded"
        await fake.stop()

        started = time.monotonic()
        with pytest.raises(BackendDown, match="cannot be reached"):
            await tg.complete(completion())
        assert time.monotonic() - started < 5.0
        info = tg.model_info(MODEL)
        assert info.status == "error" and "cannot be reached" in (info.reason or "")
        assert tg.health()["remote_backends"]["status"] == "degraded"
        assert tg.health()["models"][MODEL] == "error"
        # While it is down, requests are refused without a round trip to the dead host.
        with pytest.raises(BackendDown, match="unavailable"):
            await tg.complete(completion())
        assert backend_errors(tg, fake.url, "backend_down") >= 1

        fake = await FakeUpstream(port=port).start()  # the backend comes back
        try:
            await eventually(lambda: tg.model_info(MODEL).status == "loaded")
            assert tg.health()["remote_backends"]["status"] == "ok"
            result = await tg.complete(completion())
            assert result["choices"][0]["text"] == "Paris is the capital"
        finally:
            await fake.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_slow_backend_times_out_within_its_timeout(stream: bool) -> None:
    # A stream waits REMOTE_READ_TIMEOUT_SECONDS for each chunk; a plain request's answer
    # comes whole when the generation ends, so it waits REMOTE_REQUEST_TIMEOUT_SECONDS.
    async with FakeUpstream() as fake, textgen(fake.url, REMOTE_READ_TIMEOUT_SECONDS=0.5 if stream
                                               else 30, REMOTE_REQUEST_TIMEOUT_SECONDS=0.5) as tg:
        fake.mode = "slow"
        started = time.monotonic()
        with pytest.raises(BackendTimeout):
            await tg.open(completion(stream=stream))
        assert time.monotonic() - started < 3.0
        # The request is given up upstream too: the connection is closed, not left waiting.
        await asyncio.wait_for(fake.disconnected.wait(), 5)
        assert backend_errors(tg, fake.url, "backend_timeout") == 1
        assert tg.model_info(MODEL).status == "loaded"  # slow is not down
        assert engine_of(tg).in_flight() == 0


async def read_all(tg: TextGen, request: OpenAIRequest) -> dict[str, Any] | list[dict[str, Any]]:
    if request.stream:
        return [chunk async for chunk in tg.stream(request)]
    return await tg.complete(request)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("mode", ["garbage", "bad_json", "cut", "error500", "error502"])
async def test_garbage_from_the_backend_is_a_backend_error(mode: str, stream: bool) -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        fake.mode = mode
        with pytest.raises(BackendUnavailable) as caught:
            await read_all(tg, completion(stream=stream))
        assert type(caught.value) is BackendUnavailable
        assert backend_errors(tg, fake.url, "backend_unavailable") == 1
        assert engine_of(tg).in_flight() == 0


async def test_a_backend_that_stops_serving_a_model_drops_it() -> None:
    async with FakeUpstream(models=(MODEL, "acme/other-1b")) as fake, textgen(fake.url) as tg:
        assert tg.model_info("acme/other-1b").status == "loaded"
        fake.models = (MODEL,)
        await tg.backends.discover()
        assert tg.model_info("acme/other-1b").status == "unavailable"
        assert tg.model_info(MODEL).status == "loaded"


async def test_a_404_for_a_listed_model_makes_us_ask_the_backend_again_at_once() -> None:
    async with FakeUpstream(models=(MODEL, "acme/other-1b")) as fake, textgen(fake.url) as tg:
        fake.models = (MODEL,)  # restarted with one model; the next round is 30 s away
        gone = OpenAIRequest("completions", {"model": "acme/other-1b", "prompt": "x"},
                             read_cache=False)
        with pytest.raises(ModelNotFound, match="does not exist"):
            await tg.complete(gone)
        # The registry has no event to wait on: poll it.
        await eventually(lambda: tg.model_info("acme/other-1b").status == "unavailable")
        asked = fake.connections, len(fake.bodies)
        with pytest.raises(ModelUnavailable):  # now ours, without a round trip to the backend
            await tg.complete(gone)
        assert (fake.connections, len(fake.bodies)) == asked
        assert tg.model_info(MODEL).status == "loaded"
        assert tg.health()["remote_backends"]["backends"][0]["status"] == "up"
        assert backend_errors(tg, fake.url, "model_not_found") == 1


async def test_several_backends_each_serve_their_models() -> None:
    async with (
        FakeUpstream(models=("acme/a-7b",), reply="from a") as a,
        FakeUpstream(models=("acme/b-13b",), reply="from b") as b,
        textgen(a.url, f"{b.url}/v1/completions") as tg,
    ):
        for model, text in (("acme/a-7b", "from a"), ("acme/b-13b", "from b")):
            request = OpenAIRequest("completions", {"model": model, "prompt": "x"},
                                    read_cache=False)
            assert (await tg.complete(request))["choices"][0]["text"] == text
        assert [len(a.bodies), len(b.bodies)] == [1, 1]
        assert [b["status"] for b in tg.health()["remote_backends"]["backends"]] == ["up", "up"]


async def test_events_split_anywhere_across_chunks_are_read_whole() -> None:
    import httpx

    from textgen.engines.sse import sse_data

    events = [b'data: {"a":1}', b'event: x\r\ndata: {"b":2}', b"data: [DONE]"]
    raw = b"".join(e + (b"\r\n\r\n" if b"\r" in e else b"\n\n") for e in events)

    class Chunks(httpx.AsyncByteStream):
        def __init__(self, size: int) -> None:
            self.size = size

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(0, len(raw), self.size):
                yield raw[i : i + self.size]

    for size in range(1, len(raw) + 1):
        response = httpx.Response(200, stream=Chunks(size))
        assert [d async for d in sse_data(response)] == [b'{"a":1}', b'{"b":2}', b"[DONE]"]
