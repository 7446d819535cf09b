"""Upstreams for the remote-backend tests: a real vLLM OpenAI server, and fakes that misbehave.

`VllmServer.shared()` starts one real `vllm.entrypoints.openai.api_server` with the embedded
SmolLM2 for the whole test run (at most one alive: it costs ~3 GB and ~30 s to start) and stops
it at exit; TEXTGEN_TEST_VLLM_URL names one already running instead (handy while iterating). `FakeUpstream` stands in only where a real vLLM cannot be made to fail on demand:
down, slow, garbage, a stream cut short; it also counts connections and sees disconnects.
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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson

from textgen import DEFAULT_MODEL

MODEL_CACHE = Path.home() / ".cache" / "textgen" / "models"


def free_port() -> int:
    """A loopback port nothing listens on (for a backend that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the real thing -------------------------------------------------------------------------


class VllmServer:
    """vLLM's own OpenAI server on loopback, serving the embedded SmolLM2 under its hub name."""

    _shared: ClassVar[VllmServer | None] = None
    model = DEFAULT_MODEL

    def __init__(self, url: str, process: subprocess.Popen[bytes] | None = None,
                 log: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.process = process
        self.log = log

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
    def start(cls, timeout: float = 300.0) -> VllmServer:
        from textgen import embedded

        folder = embedded.prepare(cls.model, MODEL_CACHE)
        port = free_port()
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-server-{port}.log"
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
        }
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
            "127.0.0.1",
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
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = cls(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({process.returncode}):\n{server.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/v1/models", timeout=2).status_code == 200:
                    return server
            time.sleep(1.0)
        server.stop()
        raise RuntimeError(f"vLLM server not ready in {timeout:.0f} s:\n{server.tail()}")

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


# --- the fakes ------------------------------------------------------------------------------


class FakeUpstream:
    """A fake OpenAI-compatible server on loopback whose behaviour a test sets with `mode`.

    ok        answers as vLLM does: SSE chunks (one per word of `reply`), usage, [DONE]
    drip      the same, one chunk every `drip_seconds`, for `drip_chunks` chunks
    slow      reads the request and never answers
    garbage   answers bytes that are not HTTP
    bad_json  a 200 event stream whose chunk is not JSON
    cut       one chunk, then closes the connection without [DONE]
    error500  HTTP 500 with an OpenAI error body
    error400  HTTP 400 with an OpenAI error body (the client's mistake, passed on)
    """

    def __init__(
        self,
        mode: str = "ok",
        *,
        models: tuple[str, ...] = ("fake/tiny-7b",),
        reply: str = "Paris is the capital",
        port: int = 0,
    ) -> None:
        self.mode = mode
        self.models = models
        self.reply = reply
        self.port = port
        self.drip_seconds = 0.05
        self.drip_chunks = 200
        self.connections = 0
        self.bodies: list[dict[str, Any]] = []
        self.disconnects = 0
        self.disconnected = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:  # keep-alive: many requests on one connection
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode().split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (h.partition(":") for h in header_lines if h)
                }
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if not await self._answer(method, path, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Write one answer; False closes the connection."""
        if self.mode == "garbage":
            writer.write(b"SURPRISE \x00\x01 this is not http\r\n\r\n")
            await writer.drain()
            return False
        if self.mode == "slow":
            await asyncio.sleep(3600)
        if method == "GET" and path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "vllm"} for m in self.models
            ]
            return await self._json(writer, 200, {"object": "list", "data": data})
        request = orjson.loads(body)
        self.bodies.append(request)
        if request.get("model") not in self.models:  # vLLM's own answer and body
            return await self._json(
                writer,
                404,
                {
                    "error": {
                        "message": f"The model `{request.get('model')}` does not exist.",
                        "type": "NotFoundError",
                        "param": "model",
                        "code": 404,
                    }
                },
            )
        if self.mode in ("error500", "error400"):
            status = int(self.mode[-3:])
            return await self._json(
                writer,
                status,
                {
                    "error": {
                        "message": f"fake upstream error {status}",
                        "type": "BadRequestError",
                        "param": "max_tokens" if status == 400 else None,
                        "code": status,
                    }
                },
            )
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        chat = path.endswith("/chat/completions")
        words = self.reply.split(" ")
        if self.mode == "drip":
            words = [f"w{i}" for i in range(self.drip_chunks)]
        try:
            for i, word in enumerate(words):
                last = i == len(words) - 1
                piece = word if i == 0 else " " + word
                choice: dict[str, Any] = (
                    {
                        "index": 0,
                        "delta": {"content": piece},
                        "finish_reason": "length" if last else None,
                    }
                    if chat
                    else {
                        "index": 0,
                        "text": piece,
                        "logprobs": None,
                        "finish_reason": "length" if last else None,
                    }
                )
                if self.mode == "bad_json" and i == 1:
                    await _chunk(writer, b"data: {this is not json\n\n")
                    continue
                await _chunk(
                    writer, b"data: " + orjson.dumps({"id": "x", "choices": [choice]}) + b"\n\n"
                )
                if self.mode == "cut":
                    writer.close()
                    return False
                if self.mode == "drip":
                    await asyncio.sleep(self.drip_seconds)
            usage = {
                "prompt_tokens": 4,
                "completion_tokens": len(words),
                "total_tokens": 4 + len(words),
            }
            await _chunk(
                writer,
                b"data: " + orjson.dumps({"id": "x", "choices": [], "usage": usage}) + b"\n\n",
            )
            await _chunk(writer, b"data: [DONE]\n\n")
            await _chunk(writer, b"")
        except ConnectionError:
            self.disconnects += 1
            self.disconnected.set()
            return False
        return True

    async def _json(self, writer: asyncio.StreamWriter, status: int, payload: Any) -> bool:
        body = orjson.dumps(payload)
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        return True


async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()
    if writer.is_closing():
        raise ConnectionResetError


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
