"""Remote vLLM backends: their servers, the replicas of each model, health and recovery.

A configured endpoint (VLLM_ENDPOINT, VLLM_ENDPOINTS) names one server, or a DNS name that
resolves to several (a Kubernetes headless Service: one address per ready pod). Names are
resolved again every REMOTE_DNS_INTERVAL_SECONDS, so pods that come and go are followed. Every
server is asked for its models; the servers that serve one model id are its replicas, and the
model's engine is their `ReplicaSet` (routing and failover).

Discovery runs in the background (an unreachable backend never delays start-up) and again every
REMOTE_DISCOVERY_INTERVAL_SECONDS. A server that cannot be reached is `down`, one that failed a
request is `ejected`; both are probed again after their back-off and rejoin when they answer. A
model whose every replica is down turns `error` with the reason, and requests for it get a 503
with `Retry-After` at once instead of waiting on dead hosts; when one answers again it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

import httpx
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .engines.endpoint import Endpoint, is_address
from .engines.http11 import Http11Transport
from .engines.remote import RemoteServer, RequestNotSent, guess_spec
from .engines.replicas import ReplicaSet
from .errors import BackendDown, ModelNotFound, TextGenError
from .metrics import Metrics
from .models import ModelRegistry
from .remote_adapters import check_every_replica_agreed
from .remote_endpoints import Backend, api_key, endpoints, resolve
from .routing import make_router
from .settings import Settings

log = logging.getLogger(__name__)

# host, port -> the addresses it resolves to now
Resolver = Callable[[str, int], Awaitable[list[str]]]
TransportFactory = Callable[[], httpx.AsyncBaseTransport]
_STATES = ("unknown", "up", "ejected", "down")
_TICK_SECONDS = 0.5  # how late a probe may be after its back-off ends


class RemoteBackends:
    """The configured remote backends; `start()` discovers in the background, `close()` stops.

    `transport_factory` (one transport per server; benchmarks compare HTTP clients with it) and
    `resolver` (tests stub DNS with it) may be replaced before `start()`.
    """

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        metrics: Metrics,
        *,
        transport_factory: TransportFactory | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        s = settings
        self._interval = s.REMOTE_DISCOVERY_INTERVAL_SECONDS
        self._dns_interval = s.REMOTE_DNS_INTERVAL_SECONDS
        self._load_interval = s.REMOTE_LOAD_METRICS_INTERVAL_SECONDS
        self.transport_factory = transport_factory or self._transport
        self.resolver = resolver or resolve
        self.backends = [Backend(Endpoint.parse(url, api_key(s, url))) for url in endpoints(s)]
        self.replica_sets: dict[str, ReplicaSet] = {}
        # Adapters loaded through the lab, by name: how many times (part of their cache key).
        self._adapter_loads: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._rediscovering: dict[RemoteServer, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._discovered = asyncio.Event()
        self._next_name_retry = 0.0
        self.retries = Counter(
            "text_backend_retries_total",
            "Requests sent to a second server because the first never received them.",
            ["backend"], registry=metrics.registry,
        )
        metrics.registry.register(_ReplicaCollector(self))

    def _transport(self) -> httpx.AsyncBaseTransport:
        s = self._settings
        verify: Any = s.REMOTE_TLS_CA_FILE or s.REMOTE_TLS_VERIFY
        return Http11Transport(max_connections=s.REMOTE_MAX_CONNECTIONS, verify=verify,
                               proxy=s.REMOTE_PROXY)

    def _server(self, backend: Backend, address: str | None) -> RemoteServer:
        s = self._settings
        # A probe is never rarer than a discovery round (tests shorten the round).
        eject = min(s.REMOTE_EJECT_SECONDS, self._interval)
        server = RemoteServer(
            backend.endpoint, address,
            connect_timeout=s.REMOTE_CONNECT_TIMEOUT_SECONDS,
            read_timeout=s.REMOTE_READ_TIMEOUT_SECONDS,
            request_timeout=s.REMOTE_REQUEST_TIMEOUT_SECONDS,
            write_timeout=s.REMOTE_WRITE_TIMEOUT_SECONDS,
            eject_seconds=eject,
            eject_max_seconds=min(s.REMOTE_EJECT_MAX_SECONDS, max(self._interval, eject)),
            transport=self.transport_factory(),
        )
        server.on_failure = self._on_failure
        return server

    def servers(self) -> list[RemoteServer]:
        return [s for backend in self.backends for s in backend.servers.values()]

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.backends and not self._tasks:
            self._tasks.append(asyncio.create_task(self._watch(), name="remote backend discovery"))
            if self._load_interval > 0:
                self._tasks.append(asyncio.create_task(self._read_loads(),
                                                       name="remote backend load"))

    @property
    def discovered(self) -> bool:
        """The first discovery round is done (every backend answered or failed)."""
        return self._discovered.is_set()

    async def wait_discovered(self) -> None:
        """Wait for the first discovery round (every backend answered or failed)."""
        if self.backends:
            await self._discovered.wait()

    async def discover(self) -> None:
        """Resolve every backend's name and ask every server for its models, now."""
        try:
            await self._resolve_all(self.backends)
            await asyncio.gather(*(self._discover(s) for s in self.servers()))
        finally:
            self._discovered.set()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        next_round = next_dns = 0.0
        while True:
            try:
                now = loop.time()
                if now >= next_round:
                    await self.discover()
                    next_round = next_dns = loop.time() + self._interval
                    if self._dns_interval > 0:
                        next_dns = min(next_dns, loop.time() + self._dns_interval)
                elif self._dns_interval > 0 and now >= next_dns:
                    new = await self._resolve_all(self.backends)
                    await asyncio.gather(*(self._discover(s) for s in new))
                    next_dns = loop.time() + self._dns_interval
                await self._probe_due()
            except Exception:  # a bug here must not end discovery (and recovery) for good
                log.exception("remote backend discovery failed")
            due = [next_round] + ([next_dns] if self._dns_interval > 0 else [])
            await asyncio.sleep(min(max(min(due) - loop.time(), 0.0), _TICK_SECONDS))

    async def _probe_due(self) -> None:
        """Ask the servers whose back-off has ended (down or ejected) whether they are back."""
        now = time.monotonic()
        due = [s for s in self.servers() if s.state in ("down", "ejected") and s.retry_at <= now]
        unresolved = [b for b in self.backends if b.resolve_error and not b.servers]
        if unresolved and now >= self._next_name_retry:
            self._next_name_retry = now + min(self._settings.REMOTE_EJECT_SECONDS, self._interval)
            due += await self._resolve_all(unresolved)
        await asyncio.gather(*(self._discover(s) for s in due))

    async def _read_loads(self) -> None:
        while True:
            await asyncio.sleep(self._load_interval)
            up = [s for s in self.servers() if s.state == "up"]
            try:
                await asyncio.gather(*(s.read_load() for s in up))
            except Exception:
                log.exception("reading the remote backends' load failed")

    async def close(self) -> None:
        for task in [*self._tasks, *self._rediscovering.values(), *self._closing]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for server in self.servers():
            await server.close()

    # --- names and servers ----------------------------------------------------------------

    async def _resolve(self, backend: Backend) -> list[RemoteServer]:
        """Follow the addresses of a backend's name: gone ones leave; the new servers are
        returned (to be asked for their models)."""
        endpoint = backend.endpoint
        if is_address(endpoint.host) or self._settings.REMOTE_PROXY:
            addresses: list[str | None] = [None]  # an address already, or the proxy resolves
        else:
            try:
                addresses = list(await self.resolver(endpoint.host, endpoint.port))
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                if backend.servers:
                    # A resolver hiccup: keep the servers we know, they fail on their own.
                    log.warning("cannot resolve %s again (%s); keeping %d server(s)",
                                endpoint.host, reason, len(backend.servers))
                    return []
                if backend.resolve_error is None:
                    log.warning("remote backend %s is down: its name does not resolve (%s)",
                                backend.url, reason)
                backend.resolve_error = (f"The backend {backend.url} cannot be reached (its "
                                         f"name {endpoint.host} does not resolve: {reason}).")
                return []
        backend.resolve_error = None
        new = [a for a in addresses if a not in backend.servers]
        gone = [a for a in backend.servers if a not in addresses]
        if new and backend.servers or gone:
            log.info("remote backend %s now resolves to %s", backend.url,
                     ", ".join(a or endpoint.host for a in addresses) or "nothing")
        for address in gone:
            self._forget(backend, backend.servers.pop(address))
        for address in new:
            backend.servers[address] = self._server(backend, address)
        return [backend.servers[a] for a in new]

    async def _resolve_all(self, backends: list[Backend]) -> list[RemoteServer]:
        found = await asyncio.gather(*(self._resolve(b) for b in backends))
        return [server for servers in found for server in servers]

    def _forget(self, backend: Backend, server: RemoteServer) -> None:
        """A server whose address no longer resolves: out of every model; its open streams
        keep their connections until they end."""
        for model in server.models:
            self._leave(server, model)
        task = asyncio.create_task(server.close(), name=f"close {server.url}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- models ---------------------------------------------------------------------------

    async def _discover(self, server: RemoteServer) -> None:
        was, before = server.state, set(server.models)
        try:
            models = await server.list_models()
        except TextGenError as exc:
            if was != "down":
                log.warning("remote backend %s is down: %s", server.url, exc.message)
            server.mark_down(exc.message)
            self._refresh(server)
            return
        server.mark_up()
        if was != "up" or set(server.models) != before or server.runner is None:
            await server.read_runner()  # (re)started, perhaps as another kind; or unsaid yet
        if was != "up":
            log.info("remote backend %s is up, serving %s", server.url,
                     ", ".join(m["id"] for m in models) or "no models")
        for model in models:
            self._join(server, model)
        for gone in before - set(server.models):
            self._leave(server, gone)

    def _join(self, server: RemoteServer, model: dict[str, Any]) -> None:
        model_id = model["id"]
        replicas = self.replica_sets.get(model_id)
        entry = self._registry.entries.get(model_id)
        if entry is not None and entry.engine is not None and entry.engine is not replicas:
            return  # served in-process, which keeps precedence
        if entry is not None and entry.loading is not None:
            return  # being loaded in-process right now
        if replicas is None:
            policy = self._settings.REMOTE_ROUTING_POLICIES.get(
                model_id, self._settings.REMOTE_ROUTING_POLICY)
            router = make_router(policy, prefix_chars=self._settings.REMOTE_PREFIX_CHARS,
                                 load_factor=self._settings.REMOTE_PREFIX_LOAD_FACTOR)
            replicas = self.replica_sets[model_id] = ReplicaSet(model_id, router)
            replicas.on_retry = self._on_retry
            replicas.loads = self._adapter_loads.get(model_id, 0)
        replicas.add(server)
        replicas.lora = server.adapters.get(model_id)
        if replicas.lora is not None:  # a LoRA adapter: its base's size class (and rate limit)
            spec = dataclasses.replace(guess_spec(replicas.lora[0], model.get("owned_by")),
                                       id=model_id)
        else:
            spec = guess_spec(model_id, model.get("owned_by"))
        if server.runner is not None:  # what the server says it is, over what the name says
            spec = dataclasses.replace(spec, runner=server.runner)
        self._registry.add(spec, engine=replicas)

    # --- LoRA adapters on remote servers ----------------------------------------------------

    async def change_adapter(self, model_id: str, action: Literal["load", "unload"],
                             body: dict[str, Any]) -> None:
        """Load an adapter on every replica of its base `model_id`, or unload one from every
        replica that lists it, with vLLM's own route and body (the servers must allow it:
        VLLM_ALLOW_RUNTIME_LORA_UPDATING), then ask them again what they serve.

        Raises unless every replica agreed (textgen.remote_adapters).
        """
        replicas = self.replica_sets.get(model_id)
        if replicas is None or not replicas.replicas:
            raise ModelNotFound(f"The model '{model_id}' is not served by a remote backend.",
                                param="model")
        path = f"/v1/{action}_lora_adapter"
        servers = list(replicas.replicas)
        answers = await asyncio.gather(*(s.change_adapter(path, body) for s in servers))
        name = str(body.get("lora_name"))
        if action == "load":
            self._adapter_loads[name] = self._adapter_loads.get(name, 0) + 1
            if name in self.replica_sets:
                self.replica_sets[name].loads = self._adapter_loads[name]
        await asyncio.gather(*(self._discover(s) for s in servers))
        check_every_replica_agreed(model_id, action, name, servers, answers)

    def _leave(self, server: RemoteServer, model_id: str) -> None:
        replicas = self.replica_sets.get(model_id)
        if replicas is None:
            return
        replicas.remove(server)
        if not replicas.replicas:
            del self.replica_sets[model_id]
            if replicas.lora is not None:  # an adapter unloaded: no longer a model, as in vLLM
                self._registry.remove(model_id, replicas)
            else:
                self._registry.detach(model_id, replicas)
        else:
            self._refresh_model(model_id)

    def _refresh(self, server: RemoteServer) -> None:
        for model_id in server.models:
            self._refresh_model(model_id)

    def _refresh_model(self, model_id: str) -> None:
        """The model's status from its replicas': `error` when every one is down."""
        replicas = self.replica_sets.get(model_id)
        entry = self._registry.entries.get(model_id)
        if replicas is None or entry is None or entry.engine is not replicas:
            return
        if replicas.down():
            errors = sorted({r.last_error for r in replicas.replicas if r.last_error})
            reason = (errors[0] if len(replicas.replicas) == 1 else
                      f"all {len(replicas.replicas)} replicas are down ({'; '.join(errors)})")
            self._registry.mark_down(model_id, replicas, reason)
        elif entry.status == "error":
            self._registry.add(entry.spec, engine=replicas)

    # --- events from servers --------------------------------------------------------------

    def _on_failure(self, server: RemoteServer, error: TextGenError) -> None:
        self._metrics.backend_errors.labels(server.endpoint.shown, error.code).inc()
        if isinstance(error, BackendDown):
            # Fail the next requests fast; the watch loop probes it back in.
            self._refresh(server)
        elif isinstance(error, ModelNotFound) and server not in self._rediscovering:
            # It no longer serves a model it listed: learn its models now, so the next
            # requests get our own 404 (or another replica) instead of a round trip to it.
            task = asyncio.create_task(self._discover(server), name=f"rediscover {server.url}")
            self._rediscovering[server] = task
            task.add_done_callback(lambda _: self._rediscovering.pop(server, None))

    def _on_retry(self, server: RemoteServer, error: RequestNotSent) -> None:
        log.info("request not received by %s (%s): sent again", server.url, error.error.message)
        self.retries.labels(server.endpoint.shown).inc()

    # --- health ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """For /health: `degraded` while any server is down or ejected, and each backend's
        state with its replicas."""
        backends = [b.health() for b in self.backends]
        down = any(b["status"] in ("down", "degraded") for b in backends)
        return {"status": "degraded" if down else "ok", "backends": backends}


class _ReplicaCollector(Collector):
    """`text_backend_replicas{backend,state}`: how many servers of each backend are in each
    state, read when Prometheus scrapes (a label per backend, not per pod address)."""

    def __init__(self, backends: RemoteBackends) -> None:
        self._backends = backends

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("text_backend_replicas",
                                   "Servers of each remote backend, by state.",
                                   labels=["backend", "state"])
        for backend in self._backends.backends:
            states = [s.state for s in backend.servers.values()]
            for state in _STATES:
                family.add_metric([backend.url, state], states.count(state))
        yield family
