"""Tracing from request to projection: a command sent with a W3C traceparent appends an
event that carries it, and the projector's batch span is in the same trace, with the
PostgreSQL calls it made (an in-memory exporter collects the spans). Logs as JSON lines
carry the trace id."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from core import logs, tracing
from core.settings import Settings
from tests.identity_helpers import admin_headers

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(p)
    try:
        yield exporter
    finally:
        tracing.uninstall()


def test_a_requests_trace_id_reaches_the_projector_span(
    spans: InMemorySpanExporter, app_settings: Settings
) -> None:
    from mgw.app import create_app

    with TestClient(create_app(app_settings)) as client:
        headers = admin_headers(client)
        r = client.post(
            "/v1/content",
            json={"content_id": "traced-1", "title": "Traced", "year": 2001},
            headers={**headers, "traceparent": f"00-{TRACE}-{PARENT}-01"},
        )
        assert r.status_code == 202, r.text
        token = r.headers["X-Consistency-Token"]
        got = client.get("/v1/content/traced-1", headers={"X-Consistency-Token": token})
        assert got.status_code == 200, got.text
    done = spans.get_finished_spans()
    mine = [s for s in done if format(s.context.trace_id, "032x") == TRACE]
    server = [s for s in mine if s.kind is SpanKind.SERVER]
    assert [s.name for s in server] == ["POST /v1/content"]
    assert format(server[0].parent.span_id, "016x") == PARENT  # continued, not restarted
    projected = [s for s in done if s.name == "project catalog" and _from(s, TRACE)]
    assert projected, sorted({s.name for s in done})
    assert projected[0].kind is SpanKind.CONSUMER
    assert projected[0].attributes["mgw.applied"] >= 1
    # the projector's database work is in the request's trace, under the batch span
    db = [s for s in mine if s.attributes.get("db.system") == "postgresql"]
    assert any(s.parent and s.parent.span_id == projected[0].context.span_id for s in db)


def _from(span: object, trace_hex: str) -> bool:
    ctx = span.context  # type: ignore[attr-defined]
    links = span.links  # type: ignore[attr-defined]
    return format(ctx.trace_id, "032x") == trace_hex or any(
        format(link.context.trace_id, "032x") == trace_hex for link in links
    )


def test_json_log_lines_carry_the_trace_id(spans: InMemorySpanExporter) -> None:
    out = io.StringIO()
    logger = logging.getLogger("mgw.test.tracing")
    logger.addHandler(logs.handler("json", out))
    logger.propagate = False
    try:
        with tracing.tracer().start_as_current_span("work") as span:
            logger.warning("inside %s", "a span")
        logger.warning("outside")
    finally:
        logger.handlers.clear()
        logger.propagate = True
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["message"] == "inside a span" and inside["level"] == "WARNING"
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in outside


def test_exporters_come_from_the_standard_variables() -> None:
    assert tracing.configure("x", {"OTEL_TRACES_EXPORTER": "none"}) is False
    assert tracing.configure("x", {}) is False
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER: unknown exporter jaeger"):
        tracing.configure("x", {"OTEL_TRACES_EXPORTER": "otlp,jaeger"})
    with pytest.raises(ValueError, match="MGW_LOG_FORMAT"):
        logs.handler("yaml", io.StringIO())


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def log(request: pytest.FixtureRequest, db_uri: str) -> Any:
    if request.param == "embedded":
        from streams.embedded import EmbeddedLog

        backend = await EmbeddedLog(db_uri).open()
    else:
        from streams.kafka import KafkaLog

        backend = await KafkaLog(request.getfixturevalue("kafka")).open()
    try:
        yield backend
    finally:
        await backend.close()


async def test_the_batch_span_continues_the_trace_on_both_log_backends(
    spans: InMemorySpanExporter, stores: Any, log: Any
) -> None:
    """The event carries the trace in its headers through either backend, and the commit
    protocol every runtime shares (the embedded runner, Faust, the confluent runtime)
    opens the batch span in that trace."""
    from core.events import Event, header
    from core.topics import RANKING
    from projections.registry import by_name
    from streams.processing import ProjectionPipeline
    from streams.publisher import Publisher

    await log.ensure_topics([RANKING])
    payload = {"profile": f"p{uuid.uuid4().hex[:8]}", "version": 1, "weights": {"bm25": 1.0},
               "description": "", "set_by": None}  # fmt: skip
    with tracing.tracer().start_as_current_span("command", kind=SpanKind.SERVER) as command:
        pos = await Publisher(log).publish(Event("RankingProfileSet", payload["profile"], payload))
    sent = command.get_span_context()
    records = [r for r in await log.read(pos.topic, pos.partition, pos.offset, 10)
               if r.offset == pos.offset]  # fmt: skip
    traceparent = header(records[0].headers, "traceparent") or ""
    assert traceparent.startswith(f"00-{sent.trace_id:032x}-{sent.span_id:016x}-")
    result = await ProjectionPipeline(by_name("ranking"), stores, log, emit=False).process(records)
    assert result.applied == 1
    (batch,) = [s for s in spans.get_finished_spans() if s.name == "project ranking"]
    assert batch.context.trace_id == sent.trace_id
    assert batch.parent is not None and batch.parent.span_id == sent.span_id
    assert [link.context.span_id for link in batch.links] == [sent.span_id]
