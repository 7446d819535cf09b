"""A trivial, instant OpenAI-compatible upstream for the gateway benchmark (not a product part).

A raw asyncio HTTP/1.1 server with keep-alive that answers every completion at once with a
fixed text: as an event stream when the request says `"stream": true` (as our gateway always
asks), as one JSON body otherwise (as wrk asks when it hits it directly). Run:
`python benchmarks/instant_upstream.py --port 9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import json

MODEL = "bench/instant-7b"
_TEXT = " Paris is the capital of France."
_USAGE = {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _completion() -> bytes:
    return json.dumps(
        {
            "id": "cmpl-instant",
            "object": "text_completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "text": _TEXT, "logprobs": None, "finish_reason": "length"}],
            "usage": _USAGE,
        }
    ).encode()


def _stream() -> bytes:
    chunks = []
    for i, word in enumerate(_TEXT.split(" ")[1:]):
        last = i == len(_TEXT.split(" ")) - 2
        chunks.append(
            {
                "id": "cmpl-instant",
                "object": "text_completion",
                "created": 0,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "text": " " + word,
                        "logprobs": None,
                        "finish_reason": "length" if last else None,
                    }
                ],
            }
        )
    chunks.append(
        {
            "id": "cmpl-instant",
            "object": "text_completion",
            "created": 0,
            "model": MODEL,
            "choices": [],
            "usage": _USAGE,
        }
    )
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


COMPLETION = _response("200 OK", "application/json", _completion())
STREAM = _response("200 OK", "text/event-stream", _stream())
MODELS = _response(
    "200 OK",
    "application/json",
    json.dumps(
        {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}],
        }
    ).encode(),
)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length) if length else b""
            if head.startswith(b"GET /v1/models"):
                writer.write(MODELS)
            elif b'"stream":true' in body.replace(b" ", b""):
                writer.write(STREAM)
            else:
                writer.write(COMPLETION)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.port))
