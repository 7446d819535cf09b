""""Copy as code": the playground's current request as curl, httpx and `openai` snippets.

The snippets never contain the token itself: they read it from the `API_TOKEN` environment
variable, so a screenshot or a pasted snippet leaks nothing.
"""

from __future__ import annotations

import json
from typing import Any

from textgen import OpenAIRequest

TOKEN_VARIABLE = "API_TOKEN"


def request_body(request: OpenAIRequest, *, stream: bool = True) -> dict[str, Any]:
    """The OpenAI-compatible JSON body of a request, as the playground sends it."""
    return {**request.body, "stream": stream}


def endpoint(request: OpenAIRequest) -> str:
    return request.path.removeprefix("/v1/")


def curl(request: OpenAIRequest, api_base: str, *, auth: bool) -> str:
    body = json.dumps(request_body(request), indent=2, ensure_ascii=False)
    lines = [f"curl -N {api_base}/{endpoint(request)} \\", '  -H "Content-Type: application/json" \\']
    if auth:
        lines.append(f'  -H "Authorization: Bearer ${TOKEN_VARIABLE}" \\')
    # A quoted here-document passes the JSON verbatim: no shell escaping of the prompt.
    lines += ["  -d @- <<'JSON'", body, "JSON"]
    return "\n".join(lines)


def httpx_code(request: OpenAIRequest, api_base: str, *, auth: bool) -> str:
    body = _python_literal(request_body(request))
    headers = f'{{"Authorization": f"Bearer {{os.environ[\'{TOKEN_VARIABLE}\']}}"}}' if auth else "{}"
    return "\n".join([
        "import json",
        *(["import os"] if auth else []),
        "",
        "import httpx",
        "",
        f"body = {body}",
        f"headers = {headers}",
        f'with httpx.stream("POST", "{api_base}/{endpoint(request)}", json=body,',
        "                  headers=headers, timeout=None) as response:",
        "    response.raise_for_status()",
        "    for line in response.iter_lines():",
        '        if not line.startswith("data: ") or line == "data: [DONE]":',
        "            continue",
        "        chunk = json.loads(line[6:])",
        "        for choice in chunk[\"choices\"]:",
        f"            print({_piece(request)}, end=\"\", flush=True)",
        "print()",
    ])


def openai_code(request: OpenAIRequest, api_base: str, *, auth: bool) -> str:
    body = request_body(request)
    body.pop("stream")
    method = "chat.completions" if request.endpoint == "chat" else "completions"
    key = f'os.environ["{TOKEN_VARIABLE}"]' if auth else '"EMPTY"'
    arguments = "\n".join(f"    {name}={value!r}," for name, value in body.items())
    return "\n".join([
        *(["import os", ""] if auth else []),
        "from openai import OpenAI",
        "",
        *([] if auth else ["# This lab has no API token set: any key is accepted."]),
        f'client = OpenAI(base_url="{api_base}", api_key={key})',
        f"stream = client.{method}.create(",
        arguments,
        "    stream=True,",
        ")",
        "for chunk in stream:",
        "    for choice in chunk.choices:",
        f"        print({_openai_piece(request)}, end=\"\", flush=True)",
        "print()",
    ])


def snippets(request: OpenAIRequest, api_base: str, *, auth: bool) -> tuple[str, str, str]:
    """(curl, httpx, openai) for one request."""
    return (curl(request, api_base, auth=auth), httpx_code(request, api_base, auth=auth),
            openai_code(request, api_base, auth=auth))


def _python_literal(value: dict[str, Any]) -> str:
    # JSON's true/false/null are not Python: render a Python literal, one field a line.
    fields = ",\n".join(f"    {k!r}: {v!r}" for k, v in value.items())
    return "{\n" + fields + ",\n}"


def _piece(request: OpenAIRequest) -> str:
    if request.endpoint == "chat":
        return 'choice["delta"].get("content") or ""'
    return 'choice["text"]'


def _openai_piece(request: OpenAIRequest) -> str:
    return "choice.delta.content or \"\"" if request.endpoint == "chat" else "choice.text"
