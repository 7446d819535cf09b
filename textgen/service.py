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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .answer import Answer, new_id, now, renamed
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
from .errors import (
    EngineOverloaded,
    GenerationFailed,
    InvalidRequest,
    ModelNotReady,
    RateLimited,
    ShuttingDown,
    TextGenError,
)
from .generation import CacheStatus, Generation, Timing, replay
from .metrics import Metrics
from .models import ModelEntry, ModelInfo, ModelRegistry
from .ratelimit import RateDecision, RateLimiter
from .request import OpenAIRequest
from .settings import Settings
from .telemetry import TelemetrySampler
from .tracing import NullTrace, RequestTrace, Tracing

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
        self.models = ModelRegistry(
            cache_dir=s.MODEL_CACHE_DIR,
            local_paths=dict(s.MODEL_PATHS),
            start_engine=engine_starter or self._start_vllm,
            # A fake engine starter (tests) comes with its own check, or none.
            check_engine=engine_check if engine_starter else self._check_vllm,
            max_loaded=s.MAX_LOADED_MODELS,
            drain_seconds=s.UNLOAD_DRAIN_SECONDS,
            rate_limits=dict(s.RATE_LIMITS),
            gpu_memory_used_gb=self.telemetry.gpu.memory_used_gb,
            on_servable=self.metrics.prime,
        )
        self.history: deque[RequestRecord] = deque(maxlen=s.TELEMETRY_HISTORY * 10)
        self._metrics_server: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        # Set when the lab starts to stop (SIGTERM): readiness fails, new requests get a 503.
        self.draining = False
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
            # An error reply (WRONGTYPE, OOM) means Redis is up: it fails that call only.
            replies = (aioredis.ResponseError,)
            self.cache = RedisCache(self.redis, s.CACHE_TTL_SECONDS,
                                    CircuitBreaker("redis cache", reply_errors=replies))
            self.limiter = RateLimiter(
                self.redis, CircuitBreaker("redis rate limiter", reply_errors=replies))
        if s.METRICS_PORT:
            try:
                self._metrics_server = self.metrics.serve(s.METRICS_PORT,
                                                          s.METRICS_HOST or s.API_HOST)
            except OSError as exc:
                log.warning("metrics port %d unavailable (%s); metrics stay in-process",
                            s.METRICS_PORT, exc.strerror)
        self.telemetry.sample()
        self.telemetry.start()
        # In the background: an unreachable backend (the seed's default URL) never delays start.
        self.backends.start()
        watch = asyncio.create_task(self._log_readiness(), name="readiness log")
        self._background.add(watch)
        watch.add_done_callback(self._background.discard)
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
        return await VllmEngine.start(model_id, folder, self._vllm_options(model_id))

    async def _check_vllm(self, model_id: str, folder: Path) -> None:
        await VllmEngine.check(model_id, folder, self._vllm_options(model_id))

    def _vllm_options(self, model_id: str) -> VllmOptions:
        s = self.settings
        return VllmOptions(
            dtype=s.DTYPE,
            max_model_len=s.MAX_MODEL_LEN,
            tensor_parallel_size=s.TENSOR_PARALLEL_SIZE,
            pipeline_parallel_size=s.PIPELINE_PARALLEL_SIZE,
            distributed_executor_backend=s.DISTRIBUTED_EXECUTOR_BACKEND,
            gpu_memory_utilization=s.GPU_MEMORY_UTILIZATION,
            max_num_batched_tokens=s.MAX_NUM_BATCHED_TOKENS,
            enforce_eager=s.ENFORCE_EAGER,
            cpu_kvcache_gb=s.VLLM_CPU_KVCACHE_SPACE,
            serve_args=self.models.serve_args(model_id, s.VLLM_SERVE_ARGS),
        )

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

    async def open(self, request: OpenAIRequest) -> Generation:
        """Admit a request and start it: raises typed errors before any output is produced.

        A plain request comes back finished; a streamed one comes back ready to read.
        """
        model = request.model
        label = model if model in self.models.entries else "_unknown"
        span = self.tracing.request(label)
        timing = Timing(started=time.monotonic())
        try:
            if self.draining:
                raise ShuttingDown("The lab is stopping; send the request to another replica.")
            self.models.check_servable(model)
            if not self.settings.CACHE_SAMPLED and request.sampled:
                request = replace(request, read_cache=False, write_cache=False)
            key = cache_key(request, await self._weights(model))
            status: CacheStatus = "BYPASS"
            if request.read_cache:
                with span.child("cache.lookup"):
                    status, cached = await self._lookup(key, model)
                if cached is not None:
                    return await self._hit(request, cached, timing, span)
            engine = await self._engine(model)
            entry = self.models.entry(model)
            if entry.active >= self.settings.MAX_CONCURRENT_REQUESTS:
                raise EngineOverloaded(
                    f"The engine for '{model}' is at capacity "
                    f"({self.settings.MAX_CONCURRENT_REQUESTS} requests); retry shortly."
                )
            # Admission checks come before the limiter, so a client that honours a 503's
            # Retry-After does not spend its own quota; the slot is held meanwhile.
            entry.admit()
            try:
                with span.child("rate_limit"):
                    rate = await self._admit(model)
            except BaseException:
                entry.release()
                raise
            return await self._generate(request, engine, entry, status, rate, timing, key, span)
        except TextGenError as exc:
            self.metrics.errors.labels(label, exc.code).inc()
            self._record(model, "BYPASS", exc.code, timing, None)
            span.end(error=exc.code)
            raise

    async def _generate(self, request: OpenAIRequest, engine: Engine, entry: ModelEntry,
                        status: CacheStatus, rate: RateDecision, timing: Timing, key: str,
                        span: RequestTrace | NullTrace) -> Generation:
        model = request.model
        request_id = request.request_id or uuid.uuid4().hex
        span.start_generation()  # ends with the last token, in _finish
        self.metrics.in_flight.labels(model).inc()

        async def finish(generation: Generation, error: BaseException | None) -> None:
            entry.release()
            self.metrics.in_flight.labels(model).dec()
            await self._finish(generation, error, key, span)

        try:
            reply = await engine.generate(request, request_id)
        except BaseException as exc:
            entry.release()
            self.metrics.in_flight.labels(model).dec()
            if isinstance(exc, GenerationFailed):
                self.models.check_engines()  # a dead engine shows at once, not at /health
            raise
        if reply.chunks is not None:
            return Generation(request=request, cache_status=status, rate=rate, timing=timing,
                              on_finish=finish, source=reply.chunks)
        timing.first_token = timing.finished = time.monotonic()
        generation = Generation(request=request, cache_status=status, rate=rate, timing=timing,
                                on_finish=finish, response=reply.response)
        await finish(generation, None)
        return generation

    async def _hit(self, request: OpenAIRequest, cached: Answer, timing: Timing,
                   span: RequestTrace | NullTrace) -> Generation:
        """A cached answer under a new id, in the form the request asks for."""
        answer_id, created = new_id(request.endpoint, request.request_id or uuid.uuid4().hex), now()

        async def finish(generation: Generation, error: BaseException | None) -> None:
            await self._finish(generation, error, "", span)

        if request.stream:
            chunks = [renamed(c, answer_id, created) for c in cached.chunks()]
            return Generation(request=request, cache_status="HIT", rate=None, timing=timing,
                              on_finish=finish, source=replay(chunks))
        timing.first_token = timing.finished = time.monotonic()
        generation = Generation(request=request, cache_status="HIT", rate=None, timing=timing,
                                on_finish=finish,
                                response=renamed(cached.response(), answer_id, created))
        await finish(generation, None)
        return generation

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

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """`/tokenize` or `/detokenize` by the engine serving the body's model."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("You must provide a model parameter.", param="model")
        self.models.check_servable(model)
        engine = await self._engine(model)
        return await engine.tokenize(path, body)

    async def _weights(self, model: str) -> str:
        """What identifies the weights behind a model, for its cache key.

        Known while an engine serves it (even a remote one that is down, so its cached answers
        keep flowing) and after an in-process model was unloaded; a model that never loaded in
        this process is waited for (a load in progress) or refused (not loaded).
        """
        entry = self.models.entry(model)
        if entry.engine is not None:
            return entry.engine.weights(model)
        if entry.weights is not None:
            return entry.weights
        return (await self._engine(model)).weights(model)

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

    async def _lookup(self, key: str, model: str) -> tuple[CacheStatus, Answer | None]:
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

    async def _finish(self, gen: Generation, error: BaseException | None, key: str,
                      span: RequestTrace | NullTrace) -> None:
        model = gen.model
        hit = gen.cache_status == "HIT"
        if error is not None:
            code = error.code if isinstance(error, TextGenError) else "aborted"
            if isinstance(error, TextGenError):
                self.metrics.errors.labels(model, code).inc()
            if isinstance(error, GenerationFailed):
                self.models.check_engines()
            self._record(model, gen.cache_status, code, gen.timing, gen)
            span.end(cache=gen.cache_status, error=code)
            return
        if not hit:
            self.metrics.generation_seconds.labels(model).observe(gen.timing.total or 0.0)
            if gen.timing.time_to_first_token is not None:
                self.metrics.time_to_first_token.labels(model).observe(gen.timing.time_to_first_token)
            self.metrics.prompt_tokens.labels(model).inc(gen.prompt_tokens)
            self.metrics.completion_tokens.labels(model).inc(gen.completion_tokens)
            # Only a generation that ran to its own end is stored: never an aborted one.
            answer = gen.answer()
            if answer is not None and gen.request.write_cache:
                try:
                    await self.cache.set(key, answer)
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
                completion_tokens=gen.completion_tokens if gen is not None else 0,
            )
        )

    # --- health and dashboards ------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Component states for /health: the cache and limiter degrade, they never fail it; an
        in-process engine that died is an `error` (the process needs a restart or a reload)."""
        self.models.check_engines()
        died = [e.spec.id for e in self.models.entries.values() if e.died]
        return {
            "cache": {"backend": self.cache.kind, "status": self.cache.health()},
            "rate_limiter": {"backend": self.limiter.backend, "status": self.limiter.health()},
            "models": {e.spec.id: e.status for e in self.models.entries.values()
                       if e.status in ("loaded", "loading", "unloading", "error")},
            **({"engines": {"status": "error", "died": died}} if died else {}),
            **({"remote_backends": self.backends.health()} if self.backends.engines else {}),
        }

    def readiness(self) -> list[str]:
        """Why the lab should not take traffic now (a readiness probe's 503); empty when ready."""
        reasons = []
        if self.draining:
            reasons.append("the lab is stopping")
        model = self.settings.MODEL
        if model:
            self.models.check_engines()
            entry = self.models.entries.get(model)
            if entry is None or entry.status != "loaded":
                state = entry.status if entry is not None else "unknown"
                why = f" ({entry.reason})" if entry is not None and entry.reason else ""
                reasons.append(f"the default model {model} is {state}{why}")
        if self.backends.engines and not self.backends.discovered:
            reasons.append("the remote backends have not answered yet")
        return reasons

    def begin_drain(self) -> None:
        """The lab is about to stop: refuse new requests (503) and fail readiness."""
        if not self.draining:
            log.info("draining: no new requests; running ones may finish")
        self.draining = True

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
