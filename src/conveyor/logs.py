"""Logging for conveyor's own processes (the CLI, `broker.run()`): plain lines or one JSON
object per line (`--log-format json`). The library itself never installs handlers; only these
entry points do."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["configure_logging", "ensure_logging", "named_line", "one_line"]

#: The attributes every record has; the others are `extra=` fields. A record made directly, not
#: through the record factory: a factory another module installed may add its own fields (trace
#: ids) or expect a logger name.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the `extra=` fields (task_id, task_name, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as JSON."""
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send conveyor's logs to stderr; the library itself never installs handlers."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def ensure_logging(level: str | None = None, fmt: str = "text") -> None:
    """`broker.run()`'s logging: configure it as the CLI does when the process has no handler
    yet; when the program configured logging itself, only set the level it was given."""
    root = logging.getLogger()
    if not root.handlers:
        configure_logging(level or "INFO", fmt)
    elif level is not None:
        root.setLevel(level.upper())


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type's name when it has none)."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def named_line(exc: BaseException) -> str:
    """The exception as `Type: message` on one line (`Type: Type` when it has no message)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
