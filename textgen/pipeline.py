"""The path of one generation request: admission, cache, single flight, limit, engine, finish.

    validate -> cache lookup -> join an identical request in flight -> the engine is ready and
    has room -> rate limit -> generation (one Flight) -> cache store, metrics, history

A cache hit and a request that joins one in flight cost no engine time and are not counted
against the rate limit; a request refused for readiness or capacity (503) is not counted
either. Per generation (one Flight, however many requests read it): engine metrics and the
cache store. Per request: its outcome, its history record, its trace, and its run in the run
store when the request asks to be kept (`OpenAIRequest.record`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from .answer import Answer, new_id, now, renamed, token_counts
from .cache import CacheUnavailable, ResponseCache, cache_key
from .engines import Engine
from .errors import (
    GenerationFailed,
    ModelNotReady,
    RateLimited,
    ShuttingDown,
    TextGenError,
)
from .flight import Flight, Reader
from .generation import CacheStatus, Generation, Timing, replay
from .jsoncodec import OFF_LOOP_BYTES
from .metrics import Metrics
from .models import Admission, EngineLifecycle, ModelRegistry
from .ratelimit import RateDecision, RateLimiter
from .request import OpenAIRequest
from .runs import RunRecord, RunStore, provenance
from .settings import Settings
from .tracing import NullTrace, RequestTrace, Tracing

Trace = RequestTrace | NullTrace


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


class Pipeline:
    """Runs generation requests through the lab's stages; `TextGen.open` is its door."""

    def __init__(self, settings: Settings, models: ModelRegistry, lifecycle: EngineLifecycle,
                 cache: ResponseCache, limiter: RateLimiter, metrics: Metrics,
                 tracing: Tracing, runs: RunStore) -> None:
        self.settings = settings
        self.models = models
        self.lifecycle = lifecycle
        self.cache = cache
        self.limiter = limiter
        self.metrics = metrics
        self.tracing = tracing
        self.runs = runs
        # What the in-process engines run on, for kept runs (TextGen.start reads the GPUs).
        self.device: str | None = None
        self.history: deque[RequestRecord] = deque(maxlen=settings.TELEMETRY_HISTORY * 10)
        # Generations in flight by cache key, for identical requests to join.
        self.flights: dict[str, Flight] = {}
        # Set when the lab starts to stop (SIGTERM): new requests get a 503.
        self.draining = False

    async def open(self, request: OpenAIRequest) -> Generation:
        """Admit a request and start it: raises typed errors before any output is produced.

        A plain request comes back finished; a streamed one comes back ready to read. Either
        way the request ends in one place, its scope's `end` (RequestScope).
        """
        scope = RequestScope(self, request)
        model = request.model
        try:
            if self.draining:
                raise ShuttingDown("The lab is stopping; send the request to another replica.")
            self.models.check_servable(model)
            if not request.cacheable or (not self.settings.CACHE_SAMPLED and request.sampled):
                request = scope.request = replace(request, read_cache=False, write_cache=False)
            weights = await self.cache_identity(model)
            key = (cache_key(request, weights) if request.size < OFF_LOOP_BYTES
                   else await asyncio.to_thread(cache_key, request, weights))
            status: CacheStatus = "BYPASS"
            if request.read_cache:
                with scope.span.child("cache.lookup"):
                    status, cached = await self._lookup(key, model)
                if cached is not None:
                    return await self._hit(scope, cached)
                flight = self.flights.get(key)
                if flight is not None and not flight.done:
                    return await self._follow(scope, flight)
            engine = await self.engine(model)
            admission = self.models.entry(model).admission
            # Admission checks come before the limiter, so a client that honours a 503's
            # Retry-After does not spend its own quota; the slot is held meanwhile.
            admission.admit(self.settings.MAX_CONCURRENT_REQUESTS)
            try:
                with scope.span.child("rate_limit"):
                    rate = await self._admit(model)
            except BaseException:
                admission.release()
                raise
            return await self._generate(scope, engine, admission, status, rate, key)
        except (TextGenError, asyncio.CancelledError) as exc:
            # Refused before any output, or its caller left (a client that hung up before a
            # plain answer was ready, a cancelled evaluation): counted and kept as "aborted".
            scope.end(None, exc)
            raise

    # --- the three ways to an answer --------------------------------------------------------

    async def _generate(self, scope: RequestScope, engine: Engine, admission: Admission,
                        status: CacheStatus, rate: RateDecision, key: str) -> Generation:
        """A new generation (a Flight), read by this request first."""
        request = scope.request
        model = request.model
        request_id = request.request_id or uuid.uuid4().hex
        scope.span.start_generation()  # ends with the request, in its scope's end
        self.metrics.in_flight.labels(model).inc()

        async def ended(flight: Flight) -> None:
            admission.release()
            self.metrics.in_flight.labels(model).dec()
            await self._flight_ended(request, flight, key)

        flight = scope.flight = Flight(request.endpoint,
                                       lambda: engine.generate(request, request_id), ended)
        if request.read_cache:
            self.flights[key] = flight  # identical requests from now on read this one
        return await self._read(scope, flight.join(), flight, status, rate)

    async def _follow(self, scope: RequestScope, flight: Flight) -> Generation:
        """An identical request is being generated: read it too, under an id of our own."""
        request = scope.request
        self.metrics.shared.labels(request.model).inc()
        answer_id, created = new_id(request.endpoint, request.request_id or uuid.uuid4().hex), now()
        reader = flight.join(lambda chunk: renamed(chunk, answer_id, created))
        return await self._read(scope, reader, flight, "SHARED", None)

    async def _hit(self, scope: RequestScope, cached: Answer) -> Generation:
        """A cached answer under a new id, in the form the request asks for."""
        request = scope.request
        answer_id, created = new_id(request.endpoint, request.request_id or uuid.uuid4().hex), now()
        if request.stream:
            chunks = [renamed(c, answer_id, created) for c in cached.chunks()]
            return Generation(request=request, cache_status="HIT", rate=None, timing=scope.timing,
                              on_finish=scope.finished, source=replay(chunks))
        scope.timing.first_token = scope.timing.finished = time.monotonic()
        generation = Generation(request=request, cache_status="HIT", rate=None,
                                timing=scope.timing, on_finish=scope.finished,
                                response=renamed(cached.response(), answer_id, created))
        await scope.finished(generation, None)
        return generation

    async def _read(self, scope: RequestScope, reader: Reader, flight: Flight,
                    status: CacheStatus, rate: RateDecision | None) -> Generation:
        request = scope.request
        if request.stream:
            try:
                await flight.accepted_or_failed()  # a refusal (validation) before the headers
            except BaseException:
                await reader.aclose()
                raise
            return Generation(request=request, cache_status=status, rate=rate,
                              timing=scope.timing, on_finish=scope.finished, source=reader)
        response = await reader.result()
        scope.timing.first_token = scope.timing.finished = time.monotonic()
        generation = Generation(request=request, cache_status=status, rate=rate,
                                timing=scope.timing, on_finish=scope.finished, response=response)
        await scope.finished(generation, None)
        return generation

    # --- stages -------------------------------------------------------------------------------

    async def cache_identity(self, model: str) -> str:
        """What identifies the weights behind a model, for its cache key.

        Known while an engine serves it (even a remote one that is down, so its cached answers
        keep flowing) and after an in-process model was unloaded; a model that never loaded in
        this process is waited for (a load in progress) or refused (not loaded).
        """
        entry = self.models.entry(model)
        if entry.engine is not None:
            return entry.engine.cache_identity(model)
        if entry.cache_identity is not None:
            return entry.cache_identity
        return (await self.engine(model)).cache_identity(model)

    async def engine(self, model: str) -> Engine:
        """The engine serving a model, waiting (bounded) for a load in progress."""
        entry = self.models.entry(model)
        if entry.loading is not None:
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
        limit = self.models.rate_limit(model)
        decision = await self.limiter.hit(model, limit)
        if not decision.admitted:
            self.metrics.rate_limited.labels(model).inc()
            raise RateLimited(
                f"Rate limit reached for '{model}': {limit} requests per minute. "
                f"Retry in {decision.reset_after:.1f} s.",
                retry_after=decision.reset_after, limit=limit, reset_after=decision.reset_after,
            )
        return decision

    # --- the ends -----------------------------------------------------------------------------

    async def _flight_ended(self, request: OpenAIRequest, flight: Flight, key: str) -> None:
        """Once per generation: engine metrics, and the answer stored if it ran to its end."""
        model = request.model
        try:
            if flight.error is not None:
                if isinstance(flight.error, GenerationFailed):
                    self.lifecycle.check_engines()  # a dead engine shows at once
                return
            seconds = (flight.finished or time.monotonic()) - flight.started
            self.metrics.generation_seconds.labels(model).observe(seconds)
            if flight.first_token is not None:
                self.metrics.time_to_first_token.labels(model).observe(
                    flight.first_token - flight.started)
            prompt_tokens, completion_tokens = token_counts(flight.usage)
            self.metrics.prompt_tokens.labels(model).inc(prompt_tokens)
            self.metrics.completion_tokens.labels(model).inc(completion_tokens)
            answer = flight.answer()  # never an aborted or failed generation
            if answer is not None and request.write_cache:
                try:
                    await self.cache.set(key, answer)
                except CacheUnavailable:
                    self.metrics.cache_errors.labels("set").inc()
        finally:
            # Stored first, then forgotten: a request that comes in between still finds it.
            if self.flights.get(key) is flight:
                del self.flights[key]

    def record(self, record: RequestRecord) -> None:
        """A finished request, for the dashboards' series."""
        self.history.append(record)


class RequestScope:
    """One request's life in the pipeline: its trace, its timing, and the one place where it
    ends, `end`, whichever way it went (refused, a cache hit, a shared or a new generation)
    and however it ended (read to the end, cut by its client, failed). There: its outcome in
    the metrics, its record for the dashboards, its span, and its run in the run store when
    the request asks to be kept."""

    def __init__(self, pipeline: Pipeline, request: OpenAIRequest) -> None:
        self.pipeline = pipeline
        self.request = request
        self.label = request.model if request.model in pipeline.models.entries else "_unknown"
        self.span: Trace = pipeline.tracing.request(self.label)
        self.timing = Timing(started=time.monotonic())
        # The generation this request started, when it started one (not a hit or a follower).
        self.flight: Flight | None = None
        self._ended = False

    async def finished(self, generation: Generation, error: BaseException | None) -> None:
        """A Generation's `on_finish`: read to its end, or ended early by `error`."""
        self.end(generation, error)

    def end(self, generation: Generation | None, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        p, request = self.pipeline, self.request
        code = ("ok" if error is None
                else error.code if isinstance(error, TextGenError) else "aborted")
        cache: CacheStatus = generation.cache_status if generation is not None else "BYPASS"
        if isinstance(error, TextGenError):
            p.metrics.errors.labels(self.label, code).inc()
        p.metrics.requests.labels(self.label, code).inc()
        p.record(RequestRecord(
            time=time.time(), model=request.model, cache=cache, outcome=code,
            seconds=time.monotonic() - self.timing.started, ttft=self.timing.time_to_first_token,
            completion_tokens=generation.completion_tokens if generation is not None else 0,
        ))
        if generation is None:
            self.span.end(error=code)  # refused: no cache status to tell
        else:
            self.span.end(cache=cache, error=None if error is None else code)
        if request.record:
            self._keep(code, cache, generation,
                       error.message if isinstance(error, TextGenError) else None)

    def _keep(self, status: str, cache: CacheStatus, generation: Generation | None,
              error: str | None) -> None:
        """The request as a run in the run store (which only buffers it here)."""
        p, request, timing = self.pipeline, self.request, self.timing
        entry = p.models.entries.get(request.model)
        engine = entry.engine if entry is not None else None
        identity = (engine.cache_identity(request.model) if engine is not None
                    else entry.cache_identity if entry is not None else None)
        kind = getattr(engine, "kind", None)
        local = kind in ("vllm", "lora")  # a remote server's version and device are its own
        assert request.record is not None
        p.runs.add(RunRecord(
            model=request.model, route=request.endpoint, mode=request.record, status=status,
            cache=cache, request=request.body,
            created=time.time() - (time.monotonic() - timing.started),
            seconds=(timing.finished or time.monotonic()) - timing.started,
            answer=generation.answer() if generation is not None else None, error=error,
            prompt_tokens=generation.prompt_tokens if generation is not None else 0,
            completion_tokens=generation.completion_tokens if generation is not None else 0,
            ttft=timing.time_to_first_token,
            queue=self.flight.queue if self.flight is not None else None,
            identity=identity, engine=kind,
            vllm_version=provenance.vllm_version() if local else None,
            device=p.device if local else None, request_id=request.request_id,
            experiment=request.experiment, **({"id": request.run_id} if request.run_id else {}),
        ))


def record_dict(record: RequestRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in RequestRecord.__dataclass_fields__}
