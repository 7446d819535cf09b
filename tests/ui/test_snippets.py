"""'Copy as code': the snippets are valid code that sends exactly the playground's request."""

from __future__ import annotations

import ast
import json
import re

import pytest

from textgen import OpenAIRequest
from ui import forms, snippets

BASE = "http://127.0.0.1:8000/v1"
TRICKY = 'It\'s a "quoted" prompt\nwith a newline, a $VARIABLE and `backticks`'


def _options(max_tokens: int = 16, temperature: float = 1.0, top_p: float = 1.0, n: int = 1,
             stop: str = "", presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
             seed: object = None) -> dict[str, object]:
    return forms.sampling_options(max_tokens, temperature, top_p, n, stop, presence_penalty,
                                  frequency_penalty, seed)  # type: ignore[arg-type]


def _chat(**options: object) -> OpenAIRequest:
    return forms.generation_request("HuggingFaceTB/SmolLM2-135M-Instruct", forms.CHAT, TRICKY,
                                    _options(**options))  # type: ignore[arg-type]


def _completion(**options: object) -> OpenAIRequest:
    return forms.generation_request("google/gemma-3-270m", forms.COMPLETION, TRICKY,
                                    _options(**options))  # type: ignore[arg-type]


def test_body_carries_the_seeds_sampling_fields_in_openai_order() -> None:
    body = snippets.request_body(_completion(max_tokens=64, temperature=0.3, top_p=0.9, n=2,
                                             stop="\\n\\n\nEND", presence_penalty=0.5,
                                             frequency_penalty=-0.5, seed=7))
    assert list(body) == ["model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop",
                          "presence_penalty", "frequency_penalty", "seed", "stream"]
    assert body["prompt"] == TRICKY and body["stop"] == ["\n\n", "END"] and body["seed"] == 7


def test_optional_fields_are_left_out_when_unset() -> None:
    body = snippets.request_body(_chat())
    assert "stop" not in body and "seed" not in body
    assert body["messages"] == [{"role": "user", "content": TRICKY}]


@pytest.mark.parametrize("request_", [_chat(seed=3), _completion(stop="\\n")], ids=["chat", "completion"])
def test_curl_sends_the_body_verbatim_through_a_quoted_heredoc(request_: OpenAIRequest) -> None:
    code = snippets.curl(request_, BASE, auth=True)
    url = f"{BASE}/{'chat/completions' if request_.endpoint == 'chat' else 'completions'}"
    assert code.startswith(f"curl -N {url} ")
    assert 'Authorization: Bearer $API_TOKEN' in code
    sent = re.search(r"<<'JSON'\n(.*)\nJSON$", code, re.S)
    assert sent is not None
    assert json.loads(sent.group(1)) == snippets.request_body(request_)


@pytest.mark.parametrize("auth", [True, False])
@pytest.mark.parametrize("request_", [_chat(), _completion(n=2)], ids=["chat", "completion"])
def test_python_snippets_parse_and_carry_the_request(request_: OpenAIRequest, auth: bool) -> None:
    httpx_code = snippets.httpx_code(request_, BASE, auth=auth)
    openai_code = snippets.openai_code(request_, BASE, auth=auth)
    for code in (httpx_code, openai_code):
        ast.parse(code)
        assert ("os.environ" in code) == auth
        assert "secret" not in code
    body = ast.literal_eval(httpx_code.split("body = ", 1)[1].split("\nheaders", 1)[0])
    assert body == snippets.request_body(request_)
    method = "chat.completions" if request_.endpoint == "chat" else "completions"
    assert f"client.{method}.create(" in openai_code
    assert f'base_url="{BASE}"' in openai_code


def test_without_a_token_curl_sends_no_authorization_header() -> None:
    assert "Authorization" not in snippets.curl(_chat(), BASE, auth=False)
