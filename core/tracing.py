"""Tracing with OpenTelemetry: from the request that appended an event to the projector
batch that applied it.

Configured by the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``,
both comma-separated, or ``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` and the other
``OTEL_EXPORTER_OTLP_*`` settings the exporter reads itself, ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``. Unset, tracing is off (the SDK's own default is ``otlp``,
which on a machine without a collector only logs failed exports) and costs one flag test
per request and per batch.

How the trace travels: the API's server span (api/tracing.py) is the current span while a
command appends, and the publisher writes its W3C ``traceparent`` (and ``tracestate``)
into the event's headers, which both log backends store. The projector's batch span
(streams/processing.py) links to the context of every record it applies, and continues
the trace when the whole batch came from one; so one trace id leads from the request to
the projection on the embedded runner, Faust and the confluent runtime alike.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

#: a batch links to at most this many records' traces (a span's links are kept in memory)
MAX_LINKS = 128
EXPORTERS = ("otlp", "console", "none")

_W3C = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: Tracer = trace.NoOpTracer()


def enabled() -> bool:
    return _provider is not None


def tracer() -> Tracer:
    return _tracer


def provider() -> TracerProvider | None:
    return _provider


def configure(default_service: str, env: Mapping[str, str] | None = None) -> bool:
    """Tracing as the ``OTEL_*`` variables ask; False when they ask for none."""
    e = os.environ if env is None else env
    if e.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    wanted = [x.strip().lower() for x in e.get("OTEL_TRACES_EXPORTER", "none").split(",")]
    wanted = [x for x in wanted if x and x != "none"]
    unknown = sorted(set(wanted) - set(EXPORTERS))
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {', '.join(unknown)}; "
            f"use {', '.join(EXPORTERS)}"
        )
    if not wanted:
        return False
    attrs = {} if e.get("OTEL_SERVICE_NAME") else {"service.name": default_service}
    p = TracerProvider(resource=Resource.create(attrs))
    for name in dict.fromkeys(wanted):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            p.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(p)  # for libraries that trace through the global provider
    install(p)
    return True


def install(p: TracerProvider) -> None:
    """Trace into ``p``: our spans, and PostgreSQL and Redis calls (instrumented here so
    each library is patched once, whoever configures)."""
    global _provider, _tracer
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    uninstall()
    _provider = p
    _tracer = p.get_tracer("mgw")
    PsycopgInstrumentor().instrument(tracer_provider=p, skip_dep_check=True)
    RedisInstrumentor().instrument(tracer_provider=p, skip_dep_check=True)


def uninstall() -> None:
    global _provider, _tracer
    if _provider is None:
        return
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    PsycopgInstrumentor().uninstrument()
    RedisInstrumentor().uninstrument()
    _provider = None
    _tracer = trace.NoOpTracer()


def context_headers() -> tuple[tuple[str, bytes], ...]:
    """The current span's W3C trace context as event headers; none outside a span."""
    if _provider is None:
        return ()
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return tuple((k, v.encode()) for k, v in carrier.items())


def _context_of(headers: Sequence[tuple[str, bytes]]) -> trace.SpanContext | None:
    carrier = {
        k: v.decode("ascii", "replace") for k, v in headers if k in ("traceparent", "tracestate")
    }
    if "traceparent" not in carrier:
        return None
    ctx = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return ctx if ctx.is_valid else None


@contextlib.contextmanager
def batch_span(projector: str, records: Sequence[Any]) -> Iterator[trace.Span]:
    """A projector's span over one batch: linked to each record's trace, and a child of
    it when every record came from the same trace."""
    contexts: dict[tuple[int, int], trace.SpanContext] = {}
    for r in records:
        ctx = _context_of(r.headers)
        if ctx is not None and len(contexts) < MAX_LINKS:
            contexts.setdefault((ctx.trace_id, ctx.span_id), ctx)
    traces = {c.trace_id for c in contexts.values()}
    parent = None
    if len(traces) == 1:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(next(iter(contexts.values()))))
    topics = sorted({r.topic for r in records})
    with _tracer.start_as_current_span(
        f"project {projector}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=[Link(c) for c in contexts.values()],
        attributes={
            "mgw.projector": projector,
            "messaging.operation.type": "process",
            "messaging.batch.message_count": len(records),
            "messaging.destination.name": ",".join(topics),
        },
    ) as span:
        yield span


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span | None]:
    """A client span around a call no instrumentation library covers (vector search)."""
    if _provider is None:
        yield None
        return
    with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as s:
        yield s
