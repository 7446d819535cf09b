"""`TextGen`: the one facade the API, the UI and notebooks call.

It owns what lives as long as the lab: engines (the model registry, the in-process engines'
lifecycle, remote backends), Redis, the cache and the limiter, metrics, traces, telemetry. A
request's path through them is `textgen.pipeline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd

from . import engine_stats
from .adapters import Adapters
from .backends import RemoteBackends
from .cache import (
    CacheUnavailable,
    CircuitBreaker,
    MemoryCache,
    RedisCache,
    ResponseCache,
    TieredCache,
)
from .engine_stats import EngineReading
from .engines import Engine
from .engines.vllm_local import VllmEngine
from .engines.vllm_options import VllmOptions
from .errors import InvalidRequest, ResponseNotFound, RunNotFound, TextGenError
from .experiments import Arena, Evaluations
from .generation import Generation
from .metrics import Metrics
from .models import EngineLifecycle, ModelInfo, ModelRegistry, ModelState
from .pipeline import Pipeline, RequestRecord, record_dict
from .ratelimit import RateLimiter
from .request import OpenAIRequest
from .runs import RunRecord, RunStore, provenance
from .settings import Settings
from .telemetry import TelemetrySampler
from .tracing import Tracing

log = logging.getLogger(__name__)

# The models /health lists: loaded, on their way in or out, or failed.
_SHOWN_IN_HEALTH = (ModelState.LOADED, ModelState.LOADING, ModelState.UNLOADING, ModelState.ERROR)


class TextGen:
    """Owns engines, cache, limiter, metrics and telemetry; `await start()`, then `close()`."""

    def __init__(self, settings: Settings | None = None, *, engine_starter: Any = None,
                 engine_check: Any = None) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.metrics = Metrics()
        self.telemetry = TelemetrySampler(s.TELEMETRY_INTERVAL_SECONDS, s.TELEMETRY_HISTORY)
        self.metrics.watch_telemetry(self.telemetry)
        self.tracing = Tracing(s.OTEL_EXPORTER_OTLP_ENDPOINT)
        self.redis: Any = None
        self.cache: ResponseCache = MemoryCache(s.CACHE_MAX_ENTRIES, s.CACHE_TTL_SECONDS)
        self.limiter = RateLimiter()
        if s.REDIS_URL:
            self._use_redis(s)
        self.models = ModelRegistry(
            cache_dir=s.MODEL_CACHE_DIR,
            local_paths=dict(s.MODEL_PATHS),
            rate_limits=dict(s.RATE_LIMITS),
            on_servable=self._servable,
            on_left=lambda model_id: self.adapters.base_left(model_id),
        )
        self.adapters = Adapters(self.models, max_rank=s.MAX_LORA_RANK,
                                 modules=dict(s.LORA_MODULES),
                                 drain_seconds=s.UNLOAD_DRAIN_SECONDS)
        self.lifecycle = EngineLifecycle(
            self.models,
            start_engine=engine_starter or self._start_vllm,
            # A fake engine starter (tests) comes with its own check, or none.
            check_engine=engine_check if engine_starter else self._check_vllm,
            max_loaded=s.MAX_LOADED_MODELS,
            drain_seconds=s.UNLOAD_DRAIN_SECONDS,
            gpu_memory_used_gb=self.telemetry.gpu.memory_used_gb,
        )
        # Kept runs (History, evaluations): SQLite in LAB_DATA_DIR unless told otherwise.
        self.runs = RunStore(s.runs_database_url(), self.metrics, buffer_max=s.RUNS_BUFFER_MAX,
                             max_age_days=s.RUNS_MAX_AGE_DAYS, max_runs=s.RUNS_MAX_RUNS)
        self.pipeline = Pipeline(s, self.models, self.lifecycle, self.cache, self.limiter,
                                 self.metrics, self.tracing, self.runs)
        self.evaluations = Evaluations(self)
        self.arena = Arena(self.runs)  # blind pairwise votes and their leaderboards
        self._metrics_server: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        # Remote vLLM servers (VLLM_ENDPOINT, VLLM_ENDPOINTS): their models join the registry.
        self.backends = RemoteBackends(s, self.models, self.metrics)
        self.adapters.remote = self.backends  # adapters of remote models: on their servers

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Connect Redis, start metrics and telemetry, and load the default model."""
        s = self.settings
        if s.METRICS_PORT:
            try:
                self._metrics_server = self.metrics.serve(s.METRICS_PORT,
                                                          s.METRICS_HOST or s.API_HOST)
            except OSError as exc:
                log.warning("metrics port %d unavailable (%s); metrics stay in-process",
                            s.METRICS_PORT, exc.strerror)
        first = self.telemetry.sample()
        self.pipeline.device = provenance.device([gpu.name for gpu in first.gpus])
        self.telemetry.start()
        await self.runs.start()
        # In the background: an unreachable backend (the seed's default URL) never delays start.
        self.backends.start()
        watch = asyncio.create_task(self._log_readiness(), name="readiness log")
        self._background.add(watch)
        watch.add_done_callback(self._background.discard)
        # Evaluations a stopped lab left running go on once the default model is in; the
        # claims on those this lab runs are renewed from now on.
        self._in_background(self._resume_evaluations(), "resume evaluations")
        self.evaluations.start_watching()
        if s.MODEL:
            load = asyncio.create_task(self.lifecycle.load(s.MODEL), name="load default model")
            self._background.add(load)
            load.add_done_callback(self._background.discard)
            # A failed load is logged and shown as the model's status `error`; retrieving the
            # exception here keeps asyncio from logging it again as "never retrieved".
            load.add_done_callback(lambda t: t.cancelled() or t.exception())
            if wait:
                await load

    def _use_redis(self, s: Settings) -> None:
        """Redis for the cache (behind an in-process tier) and the limiter; it connects on
        first use, so an unreachable Redis never delays start-up."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.redis = aioredis.from_url(
            s.REDIS_URL,
            password=s.REDIS_PASSWORD.get_secret_value() if s.REDIS_PASSWORD else None,
            socket_timeout=s.REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=s.REDIS_TIMEOUT_SECONDS,
            retry_on_timeout=False,
            # After a Redis restart every pooled connection is dead: one retry on a fresh
            # connection, instead of each stale one failing a call (and opening the breaker).
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[aioredis.ConnectionError],
        )
        # An error reply (WRONGTYPE, OOM) means Redis is up: it fails that call only.
        replies = (aioredis.ResponseError,)
        remote = RedisCache(self.redis, s.CACHE_TTL_SECONDS,
                            CircuitBreaker("redis cache", reply_errors=replies))
        self.cache = TieredCache(MemoryCache(s.CACHE_MAX_ENTRIES, s.CACHE_TTL_SECONDS), remote)
        self.limiter = RateLimiter(
            self.redis, CircuitBreaker("redis rate limiter", reply_errors=replies))

    async def _resume_evaluations(self) -> None:
        with contextlib.suppress(Exception):  # a default model that failed to load: the
            await self.wait_ready()          # evaluations of other models go on all the same
        await self.evaluations.resume()

    async def wait_ready(self) -> None:
        """Wait until the default model has loaded (or failed)."""
        loads = [t for t in self._background if t.get_name() == "load default model"]
        if loads:
            await asyncio.gather(*loads)

    async def _log_readiness(self) -> None:
        """Say in the log when the lab becomes ready for traffic, or stops being ready."""
        said: list[str] | None = None
        while True:
            reasons = self.readiness()
            if reasons != said:
                if reasons:
                    log.info("not ready: %s", "; ".join(reasons))
                else:
                    log.info("ready: serving requests (GET /ready answers 200)")
                said = reasons
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        await self.evaluations.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.backends.close()
        await self.lifecycle.close()
        await self.runs.close()
        await self.telemetry.stop()
        if self.redis is not None:
            await self.redis.aclose()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.tracing.shutdown()

    async def _start_vllm(self, model_id: str, folder: Path) -> Engine:
        return await VllmEngine.start(model_id, folder, self._vllm_options(model_id))

    async def _check_vllm(self, model_id: str, folder: Path) -> None:
        await VllmEngine.check(model_id, folder, self._vllm_options(model_id))

    def _vllm_options(self, model_id: str) -> VllmOptions:
        return VllmOptions.of(self.settings,
                              self.models.serve_args(model_id, self.settings.VLLM_SERVE_ARGS))

    # --- models ---------------------------------------------------------------------------

    def _servable(self, model_id: str) -> None:
        self.metrics.prime(model_id)
        engine = self.models.entry(model_id).engine
        if self.settings.LORA_MODULES and getattr(engine, "kind", None) == "vllm":
            self._in_background(self.adapters.base_loaded(model_id), f"adapters of {model_id}")

    def _in_background(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def load_adapter(self, name: str, path: str | Path, base: str | None = None, *,
                           replace: bool = False) -> ModelInfo:
        """Load a LoRA adapter as the model `name` on its base's engine (textgen.adapters);
        `replace` reloads a name already loaded (vLLM's `load_inplace`)."""
        await self.adapters.load(name, path, base, replace=replace)
        return self.model_info(name)

    async def unload_adapter(self, name: str) -> None:
        await self.adapters.unload(name)

    def list_models(self) -> list[ModelInfo]:
        return [self.model_info(model_id) for model_id in self.models.entries]

    def model_info(self, model_id: str) -> ModelInfo:
        return self.models.info(model_id)

    async def load(self, model_id: str) -> ModelInfo:
        await self.lifecycle.load(model_id)
        return self.model_info(model_id)

    async def unload(self, model_id: str) -> ModelInfo:
        await self.lifecycle.unload(model_id)
        return self.model_info(model_id)

    def rate_limit(self, model_id: str) -> int:
        """Requests per minute for a model: RATE_LIMITS overrides the seed's size classes."""
        return self.models.rate_limit(model_id)

    # --- generation -----------------------------------------------------------------------

    async def open(self, request: OpenAIRequest) -> Generation:
        """Admit a request and start it (textgen.pipeline): raises typed errors before any
        output is produced. A plain request comes back finished; a streamed one ready to read."""
        return await self.pipeline.open(request)

    async def stream(self, request: OpenAIRequest) -> AsyncIterator[dict[str, Any]]:
        """Convenience for notebooks: the chunks of a request (streamed whatever it says)."""
        generation = await self.open(request.streamed())
        chunks = generation.chunks()
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def complete(self, request: OpenAIRequest) -> dict[str, Any]:
        """Run a request to the end and return the whole response object."""
        generation = await self.open(request.plain())
        assert generation.response is not None
        return generation.response

    async def rerun(self, run_id: str) -> RunRecord:
        """A kept run's request sent again, fresh (not answered from the cache), and kept as a
        new run (mode `rerun`, in the first one's experiment): the new run, ended or failed."""
        first = await self.runs.get(run_id)
        again = OpenAIRequest(first.route, dict(first.request),  # type: ignore[arg-type]
                              read_cache=False, record="rerun", experiment=first.experiment,
                              run_id=uuid.uuid4().hex)
        failure: TextGenError | None = None
        try:
            await self.complete(again)
        except TextGenError as exc:  # a failure is kept as a run too; say it if it was not
            failure = exc
        await self.runs.flush()
        assert again.run_id is not None
        try:
            return await self.runs.get(again.run_id)
        except RunNotFound:
            if failure is not None:
                raise failure from None
            raise

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """`/tokenize`, `/detokenize` or `/v1/messages/count_tokens` by the engine serving the
        body's model."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("You must provide a model parameter.", param="model")
        self.models.check_servable(model)
        engine = await self.pipeline.engine(model)
        return await engine.tokenize(path, body)

    async def stored_response(self, response_id: str, *, cancel: bool = False) -> dict[str, Any]:
        """`GET /v1/responses/{id}` (or its cancel): asked of every in-process engine, then of
        every remote server that is up; the one whose vLLM store keeps it answers."""
        engines = [e.engine for e in list(self.models.entries.values())
                   if e.status is ModelState.LOADED and getattr(e.engine, "kind", "") == "vllm"]
        servers = [s for s in self.backends.servers() if s.state == "up"]
        for holder in (*engines, *servers):
            found = await holder.stored_response(response_id, cancel=cancel)  # type: ignore[union-attr]
            if found is not None:
                return found  # type: ignore[no-any-return]
        raise ResponseNotFound(f"Response with id '{response_id}' not found.",
                               param="response_id")

    @property
    def history(self) -> deque[RequestRecord]:
        """The requests finished lately (the dashboards' series)."""
        return self.pipeline.history

    @property
    def draining(self) -> bool:
        return self.pipeline.draining

    # --- health and dashboards ------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Component states for /health: the cache and limiter degrade, they never fail it; an
        in-process engine that died is an `error` (the process needs a restart or a reload)."""
        self.lifecycle.check_engines()
        died = [e.spec.id for e in self.models.entries.values() if e.died]
        return {
            "cache": {"backend": self.cache.kind, "status": self.cache.health()},
            "rate_limiter": {"backend": self.limiter.backend, "status": self.limiter.health()},
            "run_store": self.runs.health(),
            "models": {e.spec.id: e.status.value for e in self.models.entries.values()
                       if e.status in _SHOWN_IN_HEALTH},
            **({"engines": {"status": "error", "died": died}} if died else {}),
            **({"remote_backends": self.backends.health()} if self.backends.backends else {}),
        }

    def readiness(self) -> list[str]:
        """Why the lab should not take traffic now (a readiness probe's 503); empty when ready."""
        reasons = []
        if self.draining:
            reasons.append("the lab is stopping")
        model = self.settings.MODEL
        if model:
            self.lifecycle.check_engines()
            entry = self.models.entries.get(model)
            if entry is None or entry.status is not ModelState.LOADED:
                state = entry.status.value if entry is not None else "unknown"
                why = f" ({entry.reason})" if entry is not None and entry.reason else ""
                reasons.append(f"the default model {model} is {state}{why}")
        if self.backends.backends and not self.backends.discovered:
            reasons.append("the remote backends have not answered yet")
        return reasons

    def begin_drain(self) -> None:
        """The lab is about to stop: refuse new requests (503) and fail readiness."""
        if not self.pipeline.draining:
            log.info("draining: no new requests; running ones may finish")
        self.pipeline.draining = True

    async def interrupt(self, error: TextGenError) -> None:
        """End every request in flight on every engine with `error` (the lab is stopping)."""
        engines = {id(e.engine): e.engine for e in self.models.entries.values() if e.engine}
        for engine in engines.values():
            with contextlib.suppress(Exception):
                await engine.interrupt(error)

    async def probe_dependencies(self) -> None:
        """Ping Redis through both breakers, so a recovered store is noticed without requests."""
        if self.redis is None:
            return
        # Each breaker skips the ping while it is open: a dead Redis costs /health no timeout.
        for breaker in (getattr(self.cache, "breaker", None), self.limiter.breaker):
            if breaker is not None:
                with contextlib.suppress(CacheUnavailable):
                    await breaker.call(self.redis.ping())

    async def engine_stats(self) -> list[EngineReading]:
        """vLLM's own metrics of every engine: in-process ones, and remote ones' `/metrics`."""
        return await engine_stats.read_all(self.models.entries.values(), self.backends.servers())

    def requests_frame(self) -> pd.DataFrame:
        """Recent requests as a DataFrame (time, model, cache, outcome, seconds, ttft, tokens)."""
        # The dashboards call this from a worker thread while the event loop appends: copy
        # first (one C call, under the GIL), or the iteration fails on "deque mutated".
        records = tuple(self.history)
        frame = pd.DataFrame(
            [record_dict(r) for r in records],
            columns=["time", "model", "cache", "outcome", "seconds", "ttft", "completion_tokens"],
        )
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame

