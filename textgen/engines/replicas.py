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

A Responses request that continues a stored response (`previous_response_id`) goes to the
replica whose vLLM store keeps it, whatever the router would pick: vLLM's store is per
server, and any other replica answers 404. The set remembers which replica made each stored
response it passed on (the latest `STORED_RESPONSES_KEPT`); one it did not pass on is sought
among the replicas.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ..errors import BackendDown, ResponseNotFound, TextGenError
from ..request import OpenAIRequest
from ..routing import Router
from .base import EngineReply
from .health import ReplicaInfo
from .remote import RemoteServer
from .remote_errors import RequestNotSent

__all__ = ["ReplicaInfo", "ReplicaSet"]

T = TypeVar("T")

# Response ids remembered per model, with the replica that made each: enough for the
# conversations a lab holds open, bounded so a long-running lab does not grow.
STORED_RESPONSES_KEPT = 10_000


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
        # Response id -> the replica that made it (and whose store keeps it), oldest first.
        self._made_by: OrderedDict[str, RemoteServer] = OrderedDict()

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
        if request.endpoint != "responses":
            return await self._send(request, lambda server: server.send(request, request_id))
        previous = request.body.get("previous_response_id")
        asked: list[RemoteServer] = []  # in order; the last one answered

        async def send(server: RemoteServer) -> EngineReply:
            asked.append(server)
            return await server.send(request, request_id)

        holder = self._holder(previous)
        if holder is None:
            reply = await self._send_seeking(request, send, asked)
        else:
            try:
                reply = await self._send(request, send, only=holder)
            except BackendDown as exc:
                raise self._holder_down(previous, exc.message) from exc
        if request.body.get("store") is False:  # kept nowhere: nothing to continue
            return reply
        if reply.response is not None:
            self._remember(reply.response, asked[-1])
            return reply
        assert reply.chunks is not None
        return EngineReply(chunks=self._remembering(reply.chunks, asked[-1]))

    def _holder(self, response_id: Any) -> RemoteServer | None:
        """The replica that made `response_id`, when this set passed it on."""
        if not isinstance(response_id, str) or response_id not in self._made_by:
            return None
        server = self._made_by[response_id]
        if server not in self.replicas:  # scaled away: its store went with it
            raise ResponseNotFound(f"Response with id '{response_id}' not found: the replica "
                                   "that stored it no longer serves the model.",
                                   param="response_id")
        if server.state == "down":
            raise self._holder_down(response_id, server.last_error)
        return server

    def _holder_down(self, response_id: str, reason: str | None) -> BackendDown:
        return BackendDown(f"The replica of the model '{self.model}' that stored the response "
                           f"'{response_id}' is down: {reason or 'it does not answer'}")

    async def _send_seeking(self, request: OpenAIRequest,
                            call: Callable[[RemoteServer], Awaitable[T]],
                            asked: list[RemoteServer]) -> T:
        """Routed by the policy; a continuation of a response this set did not pass on (made
        before the lab restarted, or through another instance of the lab) is asked of each
        other replica that is up until one keeps it. Safe to send again: vLLM refuses an
        unknown `previous_response_id` before it generates anything."""
        try:
            return await self._send(request, call)
        except ResponseNotFound:
            for server in [r for r in self.replicas if r.state == "up" and r not in asked]:
                with contextlib.suppress(ResponseNotFound, RequestNotSent):
                    return await call(server)
            raise

    def _remember(self, response: dict[str, Any], server: RemoteServer) -> None:
        response_id = response.get("id")
        if isinstance(response_id, str):
            self._made_by[response_id] = server
            self._made_by.move_to_end(response_id)
            while len(self._made_by) > STORED_RESPONSES_KEPT:
                self._made_by.popitem(last=False)

    async def _remembering(self, chunks: AsyncIterator[dict[str, Any]],
                           server: RemoteServer) -> AsyncIterator[dict[str, Any]]:
        # The first event (response.created) names the response.
        remembered = False
        async with contextlib.aclosing(chunks):
            async for event in chunks:
                if not remembered and isinstance(event.get("response"), dict):
                    self._remember(event["response"], server)
                    remembered = True
                yield event

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

    def _choose(self, request: OpenAIRequest | None, tried: tuple[RemoteServer, ...],
                only: RemoteServer | None = None) -> RemoteServer:
        pool = self.replicas if only is None else [only]
        candidates = [r for r in pool if r.state == "up" and r not in tried]
        if not candidates:
            candidates = [r for r in pool if r.state == "ejected" and r not in tried]
        if not candidates:
            reasons = sorted({r.last_error for r in self.replicas if r.last_error})
            detail = f": {'; '.join(reasons)}" if reasons else ""
            raise BackendDown(f"No replica of the model '{self.model}' is up{detail}")
        return self.router.choose(candidates, request)

    async def _send(self, request: OpenAIRequest | None,
                    call: Callable[[RemoteServer], Awaitable[T]],
                    only: RemoteServer | None = None) -> T:
        """`call` on a chosen replica (`only`: that one); once more elsewhere if the request
        never reached it (with `only`, on a new connection to it, or nowhere)."""
        server = self._choose(request, (), only)
        try:
            return await call(server)
        except RequestNotSent as first:
            again = self._again(request, server, first, only)
            try:
                return await call(again)
            except RequestNotSent as second:
                raise second.error from second

    def _again(self, request: OpenAIRequest | None, server: RemoteServer,
               first: RequestNotSent, only: RemoteServer | None) -> RemoteServer:
        """Where a request that was not sent goes next; raises when there is nowhere."""
        try:
            again = self._choose(request, (server,), only)
        except BackendDown:
            if not first.stale:
                raise first.error from first
            again = server  # the server is fine, its idle connection was not: a new one
        if self.on_retry is not None:
            self.on_retry(server, first)
        return again

