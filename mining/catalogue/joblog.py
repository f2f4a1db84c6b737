"""Structured job logs (one JSON object per log record), and how a job is stopped.

Library code logs with ``logger.info(msg, *args, extra={"event": ..., ...})``;
a shell that wants machine-readable logs attaches :func:`json_log_handler`.

A job stopped from outside (Ctrl+C, or SIGTERM under :func:`interrupt_on_sigterm`)
sees a :class:`KeyboardInterrupt` and records its run as ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

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


class JobInterrupted(KeyboardInterrupt):
    """A job was asked to stop by a signal (SIGTERM); handled like Ctrl+C.

    Attributes
    ----------
    signum : int
        The signal; a shell exits with ``128 + signum``.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_interrupted(signum: int, frame) -> None:
    raise JobInterrupted(signum)


@contextmanager
def interrupt_on_sigterm() -> Iterator[bool]:
    """While the block runs, SIGTERM raises :class:`JobInterrupted` in the main thread (as Ctrl+C does).

    Only when called from the main thread and SIGTERM still has its default
    action (an application's own handler is kept). Yields whether the
    handler was installed; the previous one is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield False
        return
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exit_code(err: KeyboardInterrupt) -> int:
    """Exit status of a job stopped by ``err``: 128 + the signal (130 for Ctrl+C, 143 for SIGTERM)."""
    return 128 + getattr(err, "signum", signal.SIGINT)
