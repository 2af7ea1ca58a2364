"""Trace ids on conveyor's log records: `trace_id` (32 hex digits) and `span_id` (16), the ids
of the span current when the record is made, so `--log-format json` lines join their trace.

A log record factory, installed once per process and wrapping the one it finds: the library
installs no handlers, and a factory sees records from every `conveyor.*` logger, which a filter
on the `conveyor` logger would not (filters do not see what child loggers propagate). Records of
other loggers and records made with no valid span current are left as they are.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

__all__ = ["install_log_correlation"]


def install_log_correlation() -> None:
    """Add `trace_id` and `span_id` to conveyor's log records from now on (once per process)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "conveyor_trace_ids", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        name = record.name or ""  # logging.makeLogRecord makes a record without one first
        if name.startswith("conveyor") and (len(name) == 8 or name[8] == "."):
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
                record.span_id = format(context.span_id, "016x")
        return record

    factory.conveyor_trace_ids = True  # type: ignore[attr-defined]  # marks it as installed
    logging.setLogRecordFactory(factory)
