"""Upstreams for the remote-backend tests: a real vLLM OpenAI server, and fakes that misbehave.

`VllmServer.shared()` starts one real `vllm.entrypoints.openai.api_server` with the embedded
SmolLM2 for the whole test run (at most one alive: it costs ~3 GB and ~30 s to start) and stops
it at exit; TEXTGEN_TEST_VLLM_URL names one already running instead (handy while iterating).
`FakeUpstream` answers as vLLM's server does and stands in only where a real vLLM cannot be
made to fail on demand (down, slow, garbage, a stream cut short, an error status) or to hold an
answer while a test looks; it records what reached it, counts connections and sees disconnects.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson

from textgen import DEFAULT_MODEL, EMBEDDING_MODEL, Settings, TextGen

from .processes import die_with_pytest

MODEL_CACHE = Path.home() / ".cache" / "textgen" / "models"


def free_port() -> int:
    """A loopback port nothing listens on (for a backend that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the real thing -------------------------------------------------------------------------


def _vllm_env() -> dict[str, str]:
    # With vLLM's Responses store, as the session's lab runs (tests/conftest.py).
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
            "VLLM_ENABLE_RESPONSES_API_STORE": "1"}



class VllmServer:
    """vLLM's own OpenAI server on loopback, serving the embedded SmolLM2 under its hub name."""

    _shared: ClassVar[VllmServer | None] = None
    model = DEFAULT_MODEL
    # The model's own flags, as the lab serves it (textgen.catalog): SmolLM2's tool calls.
    model_flags: ClassVar[tuple[str, ...]] = ("--enable-auto-tool-choice", "--tool-call-parser",
                                              "hermes")

    def __init__(self, url: str, process: subprocess.Popen[bytes] | None = None,
                 log: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.process = process
        self.log = log
        self.command: list[str] | None = None

    @classmethod
    def shared(cls) -> VllmServer:
        """The one server of this test run, started on first use (again if a module stopped it)."""
        shared = cls._shared
        if shared is None or (shared.process is not None and shared.process.poll() is not None):
            given = os.environ.get("TEXTGEN_TEST_VLLM_URL")
            cls._shared = cls(given) if given else cls.start()
            atexit.register(cls._shared.stop)
        return cls._shared

    @classmethod
    def start(cls, timeout: float = 300.0, *, host: str = "127.0.0.1", port: int | None = None,
              args: tuple[str, ...] = (), wait: bool = True,
              env: dict[str, str] | None = None) -> VllmServer:
        """Start a server (on `host`:`port`, with `args` after the default flags, which they
        override, and `env` added to its environment); `wait=False` returns at once, for
        `wait_ready` (start several together)."""
        from textgen import embedded

        folder = embedded.prepare(cls.model, MODEL_CACHE)
        port = port or free_port()
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-server-{host}-{port}.log"
        env = {**_vllm_env(), **(env or {})}
        # `vllm serve` fails with the vllm-cpu package; the module entry point works.
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(folder),
            "--served-model-name",
            cls.model,
            "--host",
            host,
            "--port",
            str(port),
            "--enforce-eager",
            "--max-model-len",
            "2048",
            # Our answers are compared with its own to the last logprob, so it must give the
            # same answer twice: float32 (bf16 moved a logprob in the 3rd digit between two
            # identical requests) and no prefix cache (a cached prefix takes another path).
            "--dtype",
            "float32",
            "--no-enable-prefix-caching",
            *cls.model_flags,
            *args,
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_pytest(),
            )
        server = cls(f"http://{host}:{port}", process, log)
        server.command = command
        if wait:
            server.wait_ready(timeout)
        return server

    def wait_ready(self, timeout: float = 300.0) -> VllmServer:
        """Wait until the server answers /v1/models (stopped, and an error, if it does not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"vLLM server exited ({self.process.returncode}):\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"vLLM server not ready in {timeout:.0f} s:\n{self.tail()}")

    def restart(self, timeout: float = 300.0) -> VllmServer:
        """Start it again, same address and flags, after `stop` or a kill."""
        assert self.command is not None and self.log is not None
        self.stop()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, env=_vllm_env(), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=die_with_pytest())
        return self.wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL the server and its engine core at once, as a dying machine would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def tail(self, lines: int = 30) -> str:
        if self.log is None:
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # Its own process group: the API server and the engine core it spawned.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def metric(self, name: str, label: str = "") -> float:
        """The sum of vLLM's own Prometheus samples `name{...label...}` (e.g. running requests)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") and label in line
        )


class VllmEmbeddingServer(VllmServer):
    """vLLM's own server on the embedded SmolLM2 as a pooling model (embeddings, score)."""

    _shared: ClassVar[VllmServer | None] = None
    model = EMBEDDING_MODEL
    model_flags = ("--runner", "pooling", "--convert", "embed")


# --- the fakes ------------------------------------------------------------------------------


class FakeUpstream:
    """A fake vLLM OpenAI server on loopback whose behaviour a test sets with `mode`.

    It answers as `vllm serve` does: a plain request (`stream` false or absent) gets one JSON
    `text_completion` or `chat.completion` object with usage; a streamed one gets SSE chunks
    (one per word of `reply`), then the usage chunk if `stream_options.include_usage`, then
    `data: [DONE]`. Like vLLM it refuses a model it does not serve (404) and `stream_options`
    on a plain request (400). The modes:

    ok        answers at once
    hold      waits for `release` before a plain answer, or after `hold_after` chunks of a
              stream; `holding` is set while a request waits there
    drip      a stream sends `drip_chunks` chunks, one every `drip_seconds`; a plain answer
              comes after as long
    slow      reads the request and never answers (until the client leaves)
    garbage   answers bytes that are not HTTP
    bad_json  a 200 whose body (a stream's second chunk) is not JSON
    cut       half a plain body, or a stream's first chunk, then closes the connection
    drop      reads a generation request and closes the connection without a byte back
    drop_reused  the same, for a request on a connection that already carried one (the
              server's keep-alive timeout firing as the request arrives); a new connection
              is answered
    error<N>  HTTP N with vLLM's error body (error400 names `max_tokens` as the param)

    `/openapi.json` lists a generator's or a pooling model's routes as `runner` says (404 when
    None). `/v1/responses` is answered too (plain, or as typed events), kept in a store of this
    server's own (`stored`) unless `store` is false, as vLLM's server does.

    Like `vllm serve --api-key`, with `api_key` it answers 401 to /v1 requests without
    `Authorization: Bearer <api_key>`. With `ssl` it speaks TLS. `/metrics` answers vLLM's
    load gauges from `waiting` and `running` (and `metrics_status`, 200 by default).

    What reached it is recorded: `bodies` and `headers` of each generation request, `answers`
    (the response object, or the list of chunks it sent), `connections` (accepted so far),
    `open_connections`, and `disconnects` / `disconnected` for clients that left before their
    answer ended.
    """

    def __init__(
        self,
        mode: str = "ok",
        *,
        models: tuple[str, ...] = ("fake/tiny-7b",),
        reply: str = "Paris is the capital",
        port: int = 0,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        ssl: Any = None,
    ) -> None:
        self.mode = mode
        self.host = host
        self.api_key = api_key
        self.ssl = ssl
        self.waiting = 0
        self.running = 0
        self.metrics_status = 200
        self.models = models
        # The routes its /openapi.json lists, as vLLM's server registers them for a "generate"
        # or a "pooling" model; None answers 404 there (FastAPI's docs turned off).
        self.runner: str | None = None
        self.reply = reply
        self.port = port
        self.hold_after = 1
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.drip_seconds = 0.05
        self.drip_chunks = 200
        self.connections = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answers: list[Any] = []
        self.stored: set[str] = set()  # the Responses this server keeps (vLLM's store)
        self.disconnects = 0
        self.dropped = 0
        self.disconnected = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = False

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections a client holds open to this server now."""
        return len(self._writers)

    async def start(self) -> FakeUpstream:
        self._stopping = False
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._stopping = True  # the connections it closes now are not clients leaving
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        """Close every open connection from this side, as a server's keep-alive timeout does."""
        for writer in list(self._writers):
            writer.close()

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- one connection -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        served = 0
        try:
            while True:  # keep-alive: many requests on one connection
                head = await reader.readuntil(b"\r\n\r\n")
                served += 1
                request_line, *header_lines = head.decode().split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (h.partition(":") for h in header_lines if h)
                }
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                dropped = self.mode == "drop" or self.mode == "drop_reused" and served > 1
                if method == "POST" and dropped:
                    self.dropped += 1
                    break  # closed without a byte back
                if not await self._answer(method, path, headers, body, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Write one answer; False closes the connection."""
        if self.mode == "garbage":
            writer.write(b"SURPRISE \x00\x01 this is not http\r\n\r\n")
            await writer.drain()
            return False
        if self.mode == "slow":
            await self._wait(reader)  # returns only when the client leaves
            return False
        if path.startswith("/v1") and self.api_key is not None and (
            headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return await self._json(writer, 401, {"error": "Unauthorized"})  # vLLM's body
        if method == "GET" and path == "/metrics":
            return await self._raw(writer, self.metrics_status, _metrics(self), "text/plain")
        if method == "GET" and path == "/openapi.json":
            if self.runner is None:
                return await self._json(writer, 404, {"detail": "Not Found"})
            routes = (("/v1/completions", "/v1/chat/completions") if self.runner == "generate"
                      else ("/v1/embeddings", "/pooling"))
            return await self._json(writer, 200, {"openapi": "3.1.0",
                                                  "paths": {r: {"post": {}} for r in routes}})
        if method == "GET" and path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "vllm", "root": m,
                 "max_model_len": 2048}
                for m in self.models
            ]
            return await self._json(writer, 200, {"object": "list", "data": data})
        request = orjson.loads(body)
        self.bodies.append(request)
        self.headers.append(headers)
        if request.get("model") not in self.models:  # vLLM's own answer and body
            return await self._error(
                writer, 404, f"The model `{request.get('model')}` does not exist.", "model")
        if path in ("/tokenize", "/detokenize"):
            return await self._json(writer, 200, _tokenized(path, request))
        if self.mode.startswith("error"):
            status = int(self.mode[5:])
            return await self._error(writer, status, f"fake upstream error {status}",
                                     "max_tokens" if status == 400 else None)
        if path == "/v1/responses":
            return await self._responses(request, writer)
        stream = bool(request.get("stream"))
        if request.get("stream_options") and not stream:  # vLLM's request validation
            return await self._error(
                writer, 400, "Stream options can only be defined when `stream=True`.",
                "stream_options")
        answer = _Answer(path.endswith("/chat/completions"), request, len(self.answers))
        words = self.reply.split(" ")
        if self.mode == "drip":
            words = [f"w{i}" for i in range(self.drip_chunks)]
        if stream:
            return await self._stream(answer, words, reader, writer)
        if self.mode == "hold" and not await self._wait(reader, event=self.release):
            return False
        if self.mode == "drip" and not await self._wait(reader, self.drip_seconds * len(words)):
            return False
        response = answer.response(words)
        self.answers.append(response)
        if self.mode == "bad_json":
            return await self._raw(writer, 200, b"{this is not json")
        if self.mode == "cut":
            content = orjson.dumps(response)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % len(content) + content[: len(content) // 2]
            )
            await writer.drain()
            return False
        return await self._json(writer, 200, response)

    async def _stream(self, answer: _Answer, words: list[str], reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        chunks = answer.chunks(words)
        self.answers.append(chunks)
        try:
            for i, chunk in enumerate(chunks):
                if self.mode == "hold" and i == self.hold_after:
                    await writer.drain()
                    if not await self._wait(reader, event=self.release):
                        return False
                data = orjson.dumps(chunk)
                if self.mode == "bad_json" and i == 1:
                    data = b"{this is not json"
                await _chunk(writer, b"data: " + data + b"\n\n")
                if self.mode == "cut":
                    writer.close()
                    return False
                drip = self.mode == "drip" and chunk.get("choices")
                if drip and not await self._wait(reader, self.drip_seconds):
                    return False
            await _chunk(writer, b"data: [DONE]\n\n")
            await _chunk(writer, b"")
        except ConnectionError:
            self._client_left()
            return False
        return True

    async def _responses(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        """OpenAI's Responses as vLLM's server answers it, with its per-server store: a
        `previous_response_id` this server did not make is a 404."""
        previous = request.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            return await self._error(writer, 404, f"Response with id '{previous}' not found.",
                                     "response_id")  # vLLM's param
        response = {"id": f"resp_{self.port}_{len(self.answers)}", "object": "response",
                    "created_at": 1700000000, "model": request["model"], "status": "completed",
                    "previous_response_id": previous,
                    "output": [{"type": "message", "role": "assistant", "status": "completed",
                                "content": [{"type": "output_text", "text": self.reply}]}],
                    "usage": {"input_tokens": 4, "output_tokens": len(self.reply.split()),
                              "total_tokens": 4 + len(self.reply.split())}}
        self.answers.append(response)
        if request.get("store", True):
            self.stored.add(response["id"])
        if not request.get("stream"):
            return await self._json(writer, 200, response)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        events = [{"type": "response.created", "sequence_number": 0,
                   "response": {**response, "status": "in_progress", "output": []}},
                  {"type": "response.output_text.delta", "sequence_number": 1,
                   "item_id": "msg_fake", "output_index": 0, "content_index": 0,
                   "delta": self.reply},
                  {"type": "response.completed", "sequence_number": 2, "response": response}]
        for event in events:
            await _chunk(writer, b"event: " + event["type"].encode() + b"\ndata: "
                         + orjson.dumps(event) + b"\n\n")
        await _chunk(writer, b"")
        return True

    async def _wait(self, reader: asyncio.StreamReader, seconds: float | None = None, *,
                    event: asyncio.Event | None = None) -> bool:
        """Wait `seconds`, or for `event`; False if the client leaves first (a disconnect)."""
        # A client waiting for its answer sends nothing: the reader returns only at its EOF.
        waits = [asyncio.ensure_future(_eof(reader))]
        if seconds is not None:
            waits.append(asyncio.ensure_future(asyncio.sleep(seconds)))
        if event is not None:
            waits.append(asyncio.ensure_future(event.wait()))
            self.holding.set()
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.holding.clear()
            for waiting in waits:
                waiting.cancel()
        if waits[0] in done:
            self._client_left()
            return False
        return True

    def _client_left(self) -> None:
        if not self._stopping:
            self.disconnects += 1
            self.disconnected.set()

    async def _error(self, writer: asyncio.StreamWriter, status: int, message: str,
                     param: str | None) -> bool:
        kind = {400: "BadRequestError", 404: "NotFoundError", 501: "NotImplementedError"}
        error = {"message": message, "type": kind.get(status, "Error"), "param": param,
                 "code": status}
        return await self._json(writer, status, {"error": error})

    async def _json(self, writer: asyncio.StreamWriter, status: int, payload: Any) -> bool:
        return await self._raw(writer, status, orjson.dumps(payload))

    async def _raw(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                   content_type: str = "application/json") -> bool:
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        return True


class _Answer:
    """The objects vLLM's server would send for one request, its reply given word by word."""

    def __init__(self, chat: bool, request: dict[str, Any], number: int) -> None:
        self.chat = chat
        self.head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-fake{number}",
            "created": 1700000000 + number,
            "model": request["model"],
        }
        options = request.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def _usage(self, words: list[str]) -> dict[str, int]:
        return {"prompt_tokens": 4, "total_tokens": 4 + len(words),
                "completion_tokens": len(words)}

    def response(self, words: list[str]) -> dict[str, Any]:
        text = " ".join(words)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
             "logprobs": None, "finish_reason": "length", "stop_reason": None}
            if self.chat
            else {"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
                  "stop_reason": None}
        )
        return {**self.head, "object": "chat.completion" if self.chat else "text_completion",
                "choices": [choice], "usage": self._usage(words),
                "system_fingerprint": "fake-fingerprint"}

    def chunks(self, words: list[str]) -> list[dict[str, Any]]:
        head = {**self.head, "object": "chat.completion.chunk" if self.chat else "text_completion"}
        chunks = []
        if self.chat:  # vLLM's first chat chunk names the role
            chunks.append({**head, "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                 "finish_reason": None}]})
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            finish = "length" if i == len(words) - 1 else None
            choice: dict[str, Any] = (
                {"index": 0, "delta": {"content": piece}, "logprobs": None,
                 "finish_reason": finish}
                if self.chat
                else {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish,
                      "stop_reason": None}
            )
            chunks.append({**head, "choices": [choice]})
        if self.include_usage:
            # vLLM stamps the fingerprint on the usage chunk when there is one, else on the
            # chunk that finishes the choice.
            chunks.append({**head, "choices": [], "usage": self._usage(words),
                           "system_fingerprint": "fake-fingerprint"})
        else:
            chunks[-1]["system_fingerprint"] = "fake-fingerprint"
        return chunks


def _metrics(fake: FakeUpstream) -> bytes:
    """vLLM's load gauges as its /metrics writes them (one engine, one model)."""
    labels = f'{{engine="0",model_name="{fake.models[0]}"}}'
    return (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{labels} {float(fake.running)}\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{labels} {float(fake.waiting)}\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f"vllm:kv_cache_usage_perc{labels} 0.25\n"
        "# TYPE vllm:prefix_cache_queries counter\n"
        f"vllm:prefix_cache_queries_total{labels} 100.0\n"
        f"vllm:prefix_cache_hits_total{labels} 40.0\n"
    ).encode()


def _tokenized(path: str, request: dict[str, Any]) -> dict[str, Any]:
    if path == "/detokenize":
        return {"prompt": " ".join(f"t{t}" for t in request.get("tokens", []))}
    tokens = list(range(len(str(request.get("prompt", "")).split())))
    return {"count": len(tokens), "max_model_len": 2048, "tokens": tokens, "token_strs": None}


async def _eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        await reader.read(1)


async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()
    if writer.is_closing():
        raise ConnectionResetError


def remote_settings(*urls: str, **overrides: object) -> Settings:
    """Settings of a lab with no in-process model in front of `urls` (the first is
    VLLM_ENDPOINT), short timeouts, no metrics port."""
    values: dict[str, object] = {
        "VLLM_ENDPOINT": urls[0] if urls else "",
        "VLLM_ENDPOINTS": list(urls[1:]),
        "MODEL": "",
        "METRICS_PORT": 0,
        "REMOTE_CONNECT_TIMEOUT_SECONDS": 0.5,
        "REMOTE_READ_TIMEOUT_SECONDS": 0.5,
        "REMOTE_DISCOVERY_INTERVAL_SECONDS": 30.0,
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def remote_textgen(*urls: str, **overrides: object) -> AsyncIterator[TextGen]:
    """A started TextGen in front of `urls` (remote_settings), once discovery has answered."""
    tg = TextGen(remote_settings(*urls, **overrides))
    await tg.start()
    try:
        await asyncio.wait_for(tg.backends.wait_discovered(), 5)
        yield tg
    finally:
        await tg.close()


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until `condition()` holds (state with no event to wait on), `within` seconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (polled: nothing signals this state)
            await asyncio.sleep(0.01)


# --- our own API, served for real -----------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Run an ASGI app (its lifespan included) under uvicorn on loopback; yields its URL."""
    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def lab_in_front_of(upstream: str, token: str, *models: str) -> AsyncIterator[str]:
    """A lab with no engine of its own (nor Redis) in front of a vLLM server at `upstream`,
    with no rate limit for `models`, its servers discovered; yields its URL."""
    from api.app import create_app

    settings = Settings(MODEL="", VLLM_ENDPOINT=upstream, REDIS_URL="", METRICS_PORT=0,
                        API_TOKEN=token, RATE_LIMITS=dict.fromkeys(models, 0))  # type: ignore[arg-type]
    app = create_app(settings, ui=False)
    async with serve_app(app) as url:
        await app.state.textgen.backends.wait_discovered()
        yield url
