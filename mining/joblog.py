"""Structured job logs: one JSON object per log record.

Library code logs with ``logger.info(msg, *args, extra={"event": ..., ...})``;
a shell that wants machine-readable logs attaches :func:`json_log_handler`.
"""

from __future__ import annotations

import json
import logging
import os
import time

#: Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def json_log_handler(path: str | os.PathLike, logger: str = "mining", level: int = logging.INFO) -> logging.Handler:
    """Append JSON-lines logs of ``logger`` (and its children) at ``level`` to ``path``; return the handler.

    The caller removes it (``logging.getLogger(logger).removeHandler(h)``) when the job ends.
    """
    handler = logging.FileHandler(os.fspath(path), encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level)
    lg = logging.getLogger(logger)
    lg.addHandler(handler)
    if lg.getEffectiveLevel() > level:
        lg.setLevel(level)
    return handler
