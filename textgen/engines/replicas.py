"""A remote model's engine: the servers that serve its id (its replicas), a router, failover.

Each request goes to one replica the router picks among those that are up. A request that
never reached the chosen server's application (`RequestNotSent`: connection refused, or a
reused keep-alive connection the server had closed before answering) is sent once more, to
another replica when there is one, else (a stale connection) to the same server on a new
connection. A request that reached a server is never sent again, whatever happens next: it
may have started a generation there.

When no replica is up but some are only ejected (they answered a 5xx, a probe is pending),
those are used rather than refusing: with one server, an occasional 500 must not turn into
503s until the next probe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import BackendDown, TextGenError
from ..request import OpenAIRequest
from ..routing import Router
from .base import EngineReply
from .health import ReplicaInfo
from .remote import RemoteServer
from .remote_errors import RequestNotSent

__all__ = ["ReplicaInfo", "ReplicaSet"]

T = TypeVar("T")


class ReplicaSet:
    """The replicas of one remote model id; `kind` is "remote"."""

    kind = "remote"

    def __init__(self, model: str, router: Router) -> None:
        self.model = model
        self.router = router
        self.replicas: list[RemoteServer] = []
        # Bumped by each load of this adapter through the lab: vLLM's listing says nothing of
        # an adapter's weights, so new ones under the same name and path need a new key.
        self.loads = 0
        # (`parent`, `root`) when the model is a LoRA adapter, as its replicas list it.
        self.lora: tuple[str, str | None] | None = None
        # Told of each request sent a second time (metrics).
        self.on_retry: Callable[[RemoteServer, RequestNotSent], None] | None = None

    def __repr__(self) -> str:
        return f"ReplicaSet({self.model!r}, {[r.url for r in self.replicas]})"

    @property
    def policy(self) -> str:
        return self.router.policy

    @property
    def url(self) -> str:
        """The replicas' URLs, for display ("remote vLLM (http://a, http://b)")."""
        return ", ".join(r.url for r in self.replicas)

    def add(self, server: RemoteServer) -> None:
        if server not in self.replicas:
            self.replicas.append(server)
            self.replicas.sort(key=lambda s: s.url)

    def remove(self, server: RemoteServer) -> None:
        if server in self.replicas:
            self.replicas.remove(server)

    def adapter(self) -> tuple[str, str | None] | None:
        """(`parent`, `root`) when the model is a LoRA adapter its replicas list."""
        return self.lora

    def down(self) -> bool:
        """Every replica is down: the model cannot be served now."""
        return all(r.state == "down" for r in self.replicas)

    def replica_info(self) -> tuple[ReplicaInfo, ...]:
        return tuple(r.info() for r in self.replicas)

    def in_flight(self) -> int:
        return sum(r.in_flight() for r in self.replicas)

    # --- the Engine interface -------------------------------------------------------------

    async def generate(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        return await self._send(request, lambda server: server.send(request, request_id))

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._send(None, lambda server: server.tokenize(path, body))

    async def interrupt(self, error: TextGenError) -> None:
        for server in list(self.replicas):
            await server.interrupt(error)

    def cache_identity(self, model: str) -> str:
        """The configured endpoints that serve the model and what their servers say of it:
        stable while replicas of one Deployment come and go (the cache key stays)."""
        endpoints = sorted({r.endpoint.shown for r in self.replicas})
        roots = sorted({r.model_roots.get(model, "") for r in self.replicas})
        loads = f"|loads={self.loads}" if self.loads else ""
        return f"{','.join(endpoints)}|{roots[0] if roots else ''}{loads}"

    async def close(self) -> None:
        """Nothing to close: the servers belong to `RemoteBackends`, shared between models."""

    # --- choosing -------------------------------------------------------------------------

    def _choose(self, request: OpenAIRequest | None,
                tried: tuple[RemoteServer, ...]) -> RemoteServer:
        candidates = [r for r in self.replicas if r.state == "up" and r not in tried]
        if not candidates:
            candidates = [r for r in self.replicas if r.state == "ejected" and r not in tried]
        if not candidates:
            reasons = sorted({r.last_error for r in self.replicas if r.last_error})
            detail = f": {'; '.join(reasons)}" if reasons else ""
            raise BackendDown(f"No replica of the model '{self.model}' is up{detail}")
        return self.router.choose(candidates, request)

    async def _send(self, request: OpenAIRequest | None,
                    call: Callable[[RemoteServer], Awaitable[T]]) -> T:
        """`call` on a chosen replica; once more elsewhere if the request never reached it."""
        server = self._choose(request, ())
        try:
            return await call(server)
        except RequestNotSent as first:
            again = self._again(request, server, first)
            try:
                return await call(again)
            except RequestNotSent as second:
                raise second.error from second

    def _again(self, request: OpenAIRequest | None, server: RemoteServer,
               first: RequestNotSent) -> RemoteServer:
        """Where a request that was not sent goes next; raises when there is nowhere."""
        try:
            again = self._choose(request, (server,))
        except BackendDown:
            if not first.stale:
                raise first.error from first
            again = server  # the server is fine, its idle connection was not: a new one
        if self.on_retry is not None:
            self.on_retry(server, first)
        return again
