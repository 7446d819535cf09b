"""OpenAI's Responses and Anthropic's Messages through the lab, in-process and in front of
vLLM's own server, driven by the official `openai` and `anthropic` clients: the same text,
events, usage and statuses as vLLM's server gives for the same request (ids and times aside).

The oracle is the package's vLLM server (tests/api/conftest.py) on the same folder with the
same flags as the session's lab (float32, no prefix cache), so greedy answers agree.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.processes import LabServer
from tests.support.upstreams import VllmServer, lab_in_front_of
from textgen import DEFAULT_MODEL

MODEL = DEFAULT_MODEL
TOKEN = "events-token"
ASK = "Name three colours."
RESPONSE = {"model": MODEL, "input": ASK, "max_output_tokens": 16, "temperature": 0}
MESSAGE_BODY = {"model": MODEL, "max_tokens": 16, "temperature": 0,
                "messages": [{"role": "user", "content": ASK}]}
# Anthropic's client takes no `temperature` argument any more: it goes in the body as sent.
MESSAGE = {**{k: v for k, v in MESSAGE_BODY.items() if k != "temperature"},
           "extra_body": {"temperature": 0}}

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
async def remote(vllm: VllmServer) -> AsyncIterator[str]:
    """A lab with no engine of its own, in front of the oracle: its URL."""
    async with lab_in_front_of(vllm.url, TOKEN, MODEL) as url:
        yield url


@pytest.fixture(params=["local", "remote"])
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(URL, token) of the session's lab (in-process), then of the lab in front of the oracle."""
    if request.param == "local":
        lab: LabServer = request.getfixturevalue("lab")
        return lab.base_url, lab.token
    return request.getfixturevalue("remote"), TOKEN


def openai_client(url: str, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=300)


def anthropic_client(url: str, token: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=token, max_retries=0, timeout=300)


NO_CACHE = {"Cache-Control": "no-cache, no-store"}


async def test_a_response_is_vllms_own(target: tuple[str, str], vllm: VllmServer) -> None:
    async with openai_client(*target) as ours, openai_client(vllm.url, "none") as theirs:
        mine = await ours.responses.create(**RESPONSE, store=False, extra_headers=NO_CACHE)
        upstream = await theirs.responses.create(**RESPONSE, store=False)
    assert mine.output_text and mine.output_text == upstream.output_text
    assert (mine.status, mine.model, mine.usage) == (upstream.status, upstream.model, upstream.usage)


async def test_a_streamed_response_sends_vllms_events(target: tuple[str, str],
                                                      vllm: VllmServer) -> None:
    async def events(client: openai.AsyncOpenAI) -> list[Any]:
        stream = await client.responses.create(**RESPONSE, store=False, stream=True,
                                               extra_headers=NO_CACHE)
        return [event async for event in stream]

    async with openai_client(*target) as ours, openai_client(vllm.url, "none") as theirs:
        mine, upstream = await events(ours), await events(theirs)
    assert [e.type for e in mine] == [e.type for e in upstream]
    assert mine[-1].type == "response.completed"
    text = "".join(e.delta for e in mine if e.type == "response.output_text.delta")
    assert text and text == mine[-1].response.output_text == upstream[-1].response.output_text


async def test_a_message_is_vllms_own(target: tuple[str, str], vllm: VllmServer) -> None:
    async with anthropic_client(*target) as ours, anthropic_client(vllm.url, "none") as theirs:
        mine = await ours.messages.create(**MESSAGE, extra_headers=NO_CACHE)
        upstream = await theirs.messages.create(**MESSAGE)
    assert mine.content[0].text and mine.content == upstream.content
    assert (mine.stop_reason, mine.usage, mine.role) == (upstream.stop_reason, upstream.usage,
                                                        upstream.role)


async def test_a_streamed_message_sends_anthropics_events(target: tuple[str, str],
                                                          vllm: VllmServer) -> None:
    async def streamed(client: anthropic.AsyncAnthropic) -> tuple[list[str], Any]:
        async with client.messages.stream(**MESSAGE, extra_headers=NO_CACHE) as stream:
            kinds = [event.type async for event in stream]
            return kinds, await stream.get_final_message()

    async with anthropic_client(*target) as ours, anthropic_client(vllm.url, "none") as theirs:
        (mine, mine_final), (upstream, upstream_final) = await streamed(ours), await streamed(theirs)
    assert mine == upstream and mine[0] == "message_start" and mine[-1] == "message_stop"
    assert mine_final.content[0].text and mine_final.content == upstream_final.content
    assert mine_final.usage == upstream_final.usage


async def test_a_stateless_response_is_cached_and_a_stored_one_is_not(lab: LabServer) -> None:
    # A new input each run: a cache left by an earlier run (a reused REDIS_URL) would answer HIT.
    body = {**RESPONSE, "input": f"{ASK} (cache {uuid.uuid4().hex[:8]})"}
    async with httpx.AsyncClient(base_url=lab.base_url, timeout=300,
                                 headers={"Authorization": f"Bearer {lab.token}"}) as client:
        first = await client.post("/v1/responses", json={**body, "store": False})
        again = await client.post("/v1/responses", json={**body, "store": False})
        streamed = await client.post("/v1/responses", json={**body, "store": False, "stream": True})
        stored = await client.post("/v1/responses", json=body)
    assert [r.status_code for r in (first, again, streamed, stored)] == [200] * 4
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert again.json()["output"] == first.json()["output"] and again.json()["id"] != first.json()["id"]
    # A stream is kept apart from a plain answer (events are not made up from a response).
    assert streamed.headers["x-cache"] == "MISS"
    assert streamed.text.startswith("event: response.created\ndata: ")
    assert "data: [DONE]" not in streamed.text
    assert stored.headers["x-cache"] == "BYPASS"  # store (vLLM's default): made every time


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/responses", {"model": MODEL}),  # no input
    ("/v1/responses", {**RESPONSE, "max_output_tokens": "many"}),
    ("/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),  # no max_tokens
    ("/v1/messages", {**MESSAGE_BODY, "messages": "hi"}),
    ("/v1/messages", {**MESSAGE_BODY, "model": "no-such-model"}),
])
async def test_bad_requests_get_vllms_status(target: tuple[str, str], vllm: VllmServer,
                                             path: str, body: dict[str, Any]) -> None:
    url, token = target
    async with httpx.AsyncClient(timeout=300) as client:
        ours = await client.post(f"{url}{path}", json=body, headers={"x-api-key": token})
        theirs = await client.post(f"{vllm.url}{path}", json=body)
    assert ours.status_code == theirs.status_code, (ours.text, theirs.text)
    assert 400 <= ours.status_code < 500 and ours.json()["error"]["message"]
    if path == "/v1/messages":
        # Anthropic's envelope, whatever refused it (vLLM's own answers in it where its
        # serving class refuses; its request validation answers in OpenAI's).
        assert ours.json()["type"] == "error" and set(ours.json()["error"]) == {"type", "message"}
        if theirs.json().get("type") == "error":
            assert set(theirs.json()["error"]) == set(ours.json()["error"])
    else:
        assert set(ours.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_stored_response_is_retrieved_by_its_id(target: tuple[str, str]) -> None:
    # The session's lab and vLLM's server run with VLLM_ENABLE_RESPONSES_API_STORE=1
    # (tests/conftest.py, tests/support/upstreams.py): in-process, the lab's engine keeps it;
    # in front of the server, the server does and the lab asks it.
    async with openai_client(*target) as client:
        made = await client.responses.create(**RESPONSE, store=True)
        again = await client.responses.retrieve(made.id)
        assert (again.id, again.status, again.output_text) == (made.id, made.status,
                                                              made.output_text)
        assert made.output_text
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve("resp_not_kept_here")
        with pytest.raises(openai.BadRequestError, match="Cannot cancel a synchronous"):
            await client.responses.cancel(made.id)  # vLLM's refusal for a finished one


async def test_counting_a_messages_tokens_is_vllms(target: tuple[str, str],
                                                   vllm: VllmServer) -> None:
    body = {"model": MODEL, "messages": MESSAGE_BODY["messages"], "system": "Be brief."}
    async with anthropic_client(*target) as ours, anthropic_client(vllm.url, "none") as theirs:
        mine = await ours.messages.count_tokens(**body)  # type: ignore[arg-type]
        upstream = await theirs.messages.count_tokens(**body)  # type: ignore[arg-type]
    assert mine.input_tokens == upstream.input_tokens > 0
