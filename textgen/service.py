"""`TextGen`: the one facade the API, the UI and notebooks call.

Pipeline of a request: validate -> cache lookup -> rate limit -> engine -> cache store ->
metrics. A cache hit costs no engine time and is not counted against the rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .backends import RemoteBackends
from .cache import (
    CacheUnavailable,
    CircuitBreaker,
    MemoryCache,
    RedisCache,
    ResponseCache,
    cache_key,
)
from .engines import Engine
from .engines.vllm_local import VllmEngine, VllmOptions
from .errors import EngineOverloaded, ModelNotReady, RateLimited, TextGenError
from .generation import CacheStatus, Generation, Timing, replay
from .metrics import Metrics
from .models import ModelInfo, ModelRegistry
from .ratelimit import RateDecision, RateLimiter
from .settings import Settings
from .telemetry import TelemetrySampler
from .tracing import NullTrace, RequestTrace, Tracing
from .types import Completion, Delta, GenerationRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished request, for the dashboards' request-rate and latency series."""

    time: float
    model: str
    cache: CacheStatus
    outcome: str
    seconds: float
    ttft: float | None
    completion_tokens: int


class TextGen:
    """Owns engines, cache, limiter, metrics and telemetry; `await start()`, then `close()`."""

    def __init__(self, settings: Settings | None = None, *, engine_starter: Any = None) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.metrics = Metrics()
        self.telemetry = TelemetrySampler(s.TELEMETRY_INTERVAL_SECONDS, s.TELEMETRY_HISTORY)
        self.metrics.watch_telemetry(self.telemetry)
        self.tracing = Tracing(s.OTEL_EXPORTER_OTLP_ENDPOINT)
        self.redis: Any = None
        self.cache: ResponseCache = MemoryCache(s.CACHE_MAX_ENTRIES, s.CACHE_TTL_SECONDS)
        self.limiter = RateLimiter()
        self.models = ModelRegistry(
            cache_dir=s.MODEL_CACHE_DIR,
            local_paths=dict(s.MODEL_PATHS),
            start_engine=engine_starter or self._start_vllm,
            max_loaded=s.MAX_LOADED_MODELS,
            rate_limits=dict(s.RATE_LIMITS),
            gpu_memory_used_gb=self.telemetry.gpu.memory_used_gb,
        )
        self.history: deque[RequestRecord] = deque(maxlen=s.TELEMETRY_HISTORY * 10)
        self._metrics_server: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        # Remote vLLM servers (VLLM_ENDPOINT, VLLM_ENDPOINTS): their models join the registry.
        self.backends = RemoteBackends(s, self.models, self.metrics)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Connect Redis, start metrics and telemetry, and load the default model."""
        s = self.settings
        if s.REDIS_URL:
            import redis.asyncio as aioredis

            self.redis = aioredis.from_url(
                s.REDIS_URL,
                password=s.REDIS_PASSWORD.get_secret_value() if s.REDIS_PASSWORD else None,
                socket_timeout=s.REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=s.REDIS_TIMEOUT_SECONDS,
                retry_on_timeout=False,
            )
            self.cache = RedisCache(self.redis, s.CACHE_TTL_SECONDS, CircuitBreaker("redis cache"))
            self.limiter = RateLimiter(self.redis, CircuitBreaker("redis rate limiter"))
        if s.METRICS_PORT:
            try:
                self._metrics_server = self.metrics.serve(s.METRICS_PORT, s.METRICS_HOST)
            except OSError as exc:
                log.warning("metrics port %d unavailable (%s); metrics stay in-process",
                            s.METRICS_PORT, exc.strerror)
        self.telemetry.sample()
        self.telemetry.start()
        # In the background: an unreachable backend (the seed's default URL) never delays start.
        self.backends.start()
        if s.MODEL:
            load = asyncio.create_task(self.models.load(s.MODEL), name="load default model")
            self._background.add(load)
            load.add_done_callback(self._background.discard)
            # A failed load is logged and shown as the model's status `error`; retrieving the
            # exception here keeps asyncio from logging it again as "never retrieved".
            load.add_done_callback(lambda t: t.cancelled() or t.exception())
            if wait:
                await load

    async def wait_ready(self) -> None:
        """Wait until the default model has loaded (or failed)."""
        if self._background:
            await asyncio.gather(*self._background)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.backends.close()
        await self.models.close()
        await self.telemetry.stop()
        if self.redis is not None:
            await self.redis.aclose()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.tracing.shutdown()

    async def _start_vllm(self, model_id: str, folder: Path) -> Engine:
        s = self.settings
        options = VllmOptions(
            dtype=s.DTYPE,
            max_model_len=s.MAX_MODEL_LEN,
            tensor_parallel_size=s.TENSOR_PARALLEL_SIZE,
            gpu_memory_utilization=s.GPU_MEMORY_UTILIZATION,
            max_num_batched_tokens=s.MAX_NUM_BATCHED_TOKENS,
            enforce_eager=s.ENFORCE_EAGER,
            cpu_kvcache_gb=s.VLLM_CPU_KVCACHE_SPACE,
        )
        return await VllmEngine.start(model_id, folder, options)

    # --- models ---------------------------------------------------------------------------

    def list_models(self) -> list[ModelInfo]:
        return [self.model_info(model_id) for model_id in self.models.entries]

    def model_info(self, model_id: str) -> ModelInfo:
        return self.models.info(model_id)

    async def load(self, model_id: str) -> ModelInfo:
        await self.models.load(model_id)
        return self.model_info(model_id)

    async def unload(self, model_id: str) -> ModelInfo:
        await self.models.unload(model_id)
        return self.model_info(model_id)

    def rate_limit(self, model_id: str) -> int:
        """Requests per minute for a model: RATE_LIMITS overrides the seed's size classes."""
        return self.models.rate_limit(model_id)

    # --- generation -----------------------------------------------------------------------

    async def open(self, request: GenerationRequest) -> Generation:
        """Admit a request and start it: raises typed errors before any output is produced."""
        model = request.model
        label = model if model in self.models.entries else "_unknown"
        span = self.tracing.request(label)
        timing = Timing(started=time.monotonic())
        try:
            self.models.check_servable(model)
            key = cache_key(request)
            status: CacheStatus = "BYPASS"
            if request.read_cache:
                with span.child("cache.lookup"):
                    status, cached = await self._lookup(key, model)
                if cached is not None:
                    return self._generation(request, replay(cached), None, "HIT", None, timing,
                                            key, span, cached)
            with span.child("rate_limit"):
                rate = await self._admit(model)
            engine = await self._engine(model)
            if engine.in_flight() >= self.settings.MAX_CONCURRENT_REQUESTS:
                raise EngineOverloaded(
                    f"The engine for '{model}' is at capacity "
                    f"({self.settings.MAX_CONCURRENT_REQUESTS} requests); retry shortly."
                )
            request_id = uuid.uuid4().hex
            span.start_generation()  # ends with the last token, in _finish
            source = engine.generate(request, request_id)
            self.metrics.in_flight.labels(model).inc()
            try:
                first = await anext(source)
            except BaseException:
                self.metrics.in_flight.labels(model).dec()
                await source.aclose()
                raise
            return self._generation(request, source, first, status, rate, timing, key, span)
        except TextGenError as exc:
            self.metrics.errors.labels(label, exc.code).inc()
            self._record(model, "BYPASS", exc.code, timing, None)
            span.end(error=exc.code)
            raise

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Convenience for notebooks: the deltas of a request."""
        generation = await self.open(request)
        async for delta in generation.events():
            yield delta

    async def complete(self, request: GenerationRequest) -> Completion:
        """Run a request to the end and return the whole completion."""
        generation = await self.open(request)
        return await generation.result()

    async def _engine(self, model: str) -> Engine:
        entry = self.models.entry(model)
        if entry.loading is not None:
            # A model that is loading: wait (bounded) rather than refuse at once.
            try:
                await asyncio.wait_for(asyncio.shield(entry.loading), self.settings.LOAD_WAIT_SECONDS)
            except TimeoutError:
                raise ModelNotReady(f"The model '{model}' is still loading; retry shortly.") from None
            except Exception:
                pass  # the load failed: engine_for says why
        return self.models.engine_for(model)

    async def _lookup(self, key: str, model: str) -> tuple[CacheStatus, Completion | None]:
        try:
            cached = await self.cache.get(key)
        except CacheUnavailable:
            self.metrics.cache_errors.labels("get").inc()
            return "BYPASS", None
        if cached is None:
            self.metrics.cache_misses.labels(model).inc()
            return "MISS", None
        self.metrics.cache_hits.labels(model).inc()
        return "HIT", cached

    async def _admit(self, model: str) -> RateDecision:
        limit = self.rate_limit(model)
        decision = await self.limiter.hit(model, limit)
        if not decision.admitted:
            self.metrics.rate_limited.labels(model).inc()
            raise RateLimited(
                f"Rate limit reached for '{model}': {limit} requests per minute. "
                f"Retry in {decision.reset_after:.1f} s.",
                retry_after=decision.reset_after, limit=limit, reset_after=decision.reset_after,
            )
        return decision

    def _generation(self, request: GenerationRequest, source: Any, first: Any, status: CacheStatus,
                    rate: RateDecision | None, timing: Timing, key: str,
                    span: RequestTrace | NullTrace,
                    cached: Completion | None = None) -> Generation:
        async def finish(generation: Generation, error: BaseException | None) -> None:
            await self._finish(generation, error, key, span)

        return Generation(
            id=f"cmpl-{uuid.uuid4().hex}", request=request, source=source, first=first,
            cache_status=status, rate=rate, timing=timing, on_finish=finish, cached=cached,
        )

    async def _finish(self, gen: Generation, error: BaseException | None, key: str,
                      span: RequestTrace | NullTrace) -> None:
        model = gen.model
        hit = gen.cache_status == "HIT"
        if not hit:
            self.metrics.in_flight.labels(model).dec()
        if error is not None:
            code = error.code if isinstance(error, TextGenError) else "aborted"
            if isinstance(error, TextGenError):
                self.metrics.errors.labels(model, code).inc()
            self._record(model, gen.cache_status, code, gen.timing, gen)
            span.end(cache=gen.cache_status, error=code)
            return
        if not hit:
            self.metrics.generation_seconds.labels(model).observe(gen.timing.total or 0.0)
            if gen.timing.time_to_first_token is not None:
                self.metrics.time_to_first_token.labels(model).observe(gen.timing.time_to_first_token)
            self.metrics.prompt_tokens.labels(model).inc(gen.usage.prompt_tokens)
            self.metrics.completion_tokens.labels(model).inc(gen.usage.completion_tokens)
            # Only a generation that ran to its own end is stored: never an aborted one.
            if gen.complete and gen.request.write_cache and gen.completion is not None:
                try:
                    await self.cache.set(key, gen.completion)
                except CacheUnavailable:
                    self.metrics.cache_errors.labels("set").inc()
        self._record(model, gen.cache_status, "ok", gen.timing, gen)
        span.end(cache=gen.cache_status)

    def _record(self, model: str, cache: CacheStatus, outcome: str, timing: Timing,
                gen: Generation | None) -> None:
        self.metrics.requests.labels(model if model in self.models.entries else "_unknown", outcome).inc()
        self.history.append(
            RequestRecord(
                time=time.time(), model=model, cache=cache, outcome=outcome,
                seconds=time.monotonic() - timing.started, ttft=timing.time_to_first_token,
                completion_tokens=gen.usage.completion_tokens if gen is not None else 0,
            )
        )

    # --- health and dashboards ------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Component states for /health: the cache and limiter degrade, they never fail it."""
        return {
            "cache": {"backend": self.cache.kind, "status": self.cache.health()},
            "rate_limiter": {"backend": self.limiter.backend, "status": self.limiter.health()},
            "models": {e.spec.id: e.status for e in self.models.entries.values()
                       if e.status in ("loaded", "loading", "error")},
            **({"remote_backends": self.backends.health()} if self.backends.engines else {}),
        }

    async def probe_dependencies(self) -> None:
        """Ping Redis so a recovered store is noticed even when no request comes."""
        if self.redis is not None and isinstance(self.cache, RedisCache):
            with contextlib.suppress(CacheUnavailable):
                await self.cache.breaker.call(self.redis.ping())

    def requests_frame(self) -> pd.DataFrame:
        """Recent requests as a DataFrame (time, model, cache, outcome, seconds, ttft, tokens)."""
        frame = pd.DataFrame(
            [_record_dict(r) for r in self.history],
            columns=["time", "model", "cache", "outcome", "seconds", "ttft", "completion_tokens"],
        )
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame


def _record_dict(record: RequestRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in RequestRecord.__dataclass_fields__}
