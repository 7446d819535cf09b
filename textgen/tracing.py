"""OpenTelemetry tracing: exported over OTLP/HTTP when an endpoint is set, a no-op otherwise."""

from __future__ import annotations

import contextlib
from typing import Any

from opentelemetry import trace


class Tracing:
    """A tracer of our own (not the global provider), so several apps in one process never collide."""

    def __init__(self, endpoint: str | None, service_name: str = "text-generator") -> None:
        self._provider: Any = None
        self.enabled = bool(endpoint)
        if not endpoint:
            self.tracer: trace.Tracer = trace.NoOpTracer()
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.tracer = self._provider.get_tracer("textgen")

    def request(self, model: str) -> RequestTrace | NullTrace:
        """The spans of one request; with tracing off, a shared do-nothing stand-in.

        Even OpenTelemetry's no-op spans cost ~10 us each on this machine (four per request),
        so with no endpoint the hot path makes none at all.
        """
        return RequestTrace(self.tracer, model) if self.enabled else NULL_TRACE

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


class RequestTrace:
    """The spans of one request: the request span, and the generation span under it.

    Child spans hang off the request span explicitly: a streamed response outlives the handler,
    so the request span is never the ambient "current" one.
    """

    def __init__(self, tracer: trace.Tracer, model: str) -> None:
        self._tracer = tracer
        self.request = tracer.start_span("textgen.request", attributes={"model": model})
        self._parent = trace.set_span_in_context(self.request)
        self.generation: trace.Span | None = None

    def child(self, name: str) -> trace.Span:
        """A span for one stage (use as a context manager)."""
        return self._tracer.start_span(name, context=self._parent)

    def start_generation(self) -> None:
        self.generation = self.child("generation")

    def end(self, *, cache: str | None = None, error: str | None = None) -> None:
        for span in (self.generation, self.request):
            if span is None:
                continue
            if cache is not None:
                span.set_attribute("cache", cache)
            if error is not None:
                span.set_attribute("error.type", error)
            span.end()


class NullTrace:
    """RequestTrace's shape, doing nothing: tracing is off."""

    generation = None

    def child(self, name: str) -> contextlib.nullcontext[None]:
        return _NULL_CONTEXT

    def start_generation(self) -> None:
        pass

    def end(self, *, cache: str | None = None, error: str | None = None) -> None:
        pass


_NULL_CONTEXT = contextlib.nullcontext()
NULL_TRACE = NullTrace()
