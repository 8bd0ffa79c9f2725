"""Structured logging: one JSON object per line on stderr, nothing personal in it."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: an exception's text can carry a query's parameters.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """`level: message` for a person at a terminal; an exception by its type alone."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname}: {record.getMessage()}"
        if record.exc_info and record.exc_info[0] is not None:
            # Never the traceback: an exception's text can carry a query's parameters.
            text += f" ({record.exc_info[0].__name__})"
        return text


def configure(level: int = logging.INFO, *, structured: bool = True) -> None:
    """Routes the portal's and uvicorn's loggers to stderr: JSON for servers, plain for the CLI."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if structured else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # uvicorn's own access log writes full paths (tokens included); ours leaves them out.
    logging.getLogger("uvicorn.access").disabled = True
