"""One job at a time per catalogue: an OS lock on ``<catalogue>.lock``, released by the kernel when the job dies."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator

from mining.catalogue.store import Store

logger = logging.getLogger(__name__)


# -- the job --------------------------------------------------------------------------
class CatalogueBusy(RuntimeError):
    """Another mine job holds the catalogue (one job at a time per catalogue).

    Attributes
    ----------
    holder : dict
        What is known of the holder: ``pid``, ``host``, ``since`` (epoch
        seconds) and ``run`` (its run id), each possibly missing.
    """

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def lock_path(store_path: str) -> str:
    """The side file whose OS lock a mine job holds: ``<catalogue>.lock``."""
    return os.path.abspath(store_path) + ".lock"


def _busy_message(store: Store, path: str, holder: dict) -> str:
    runs = store.query(
        "SELECT id, pid, host, started_at FROM runs WHERE kind = 'mine' AND status = 'running' ORDER BY id DESC"
    )
    run = next((r for r in runs if holder.get("pid") in (None, r["pid"])), None)
    if run is not None:
        holder = {"pid": run["pid"], "host": run["host"], "since": run["started_at"], **holder, "run": run["id"]}
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "an unknown time"
    who = f"run {holder['run']} " if holder.get("run") else "another job "
    pid = holder.get("pid", "?")
    return (
        f"catalogue {os.path.abspath(store.path)!r} is already being mined by {who}(pid {pid} on host "
        f"{holder.get('host', '?')}, since {when}; lock {path}): one mine job at a time per catalogue. "
        f"Wait for it to finish, or stop it (kill {pid} on that host) and run this command again to resume."
    )


@contextlib.contextmanager
def catalogue_lock(store: Store) -> Iterator[dict]:
    """Hold the catalogue for one mine job; raise :class:`CatalogueBusy` at once if another job holds it.

    The lock is ``flock`` on the side file :func:`lock_path`, never on the
    catalogue itself (closing any other descriptor of the catalogue would drop
    this process's SQLite locks). The kernel releases it when the holder dies,
    so a killed job never blocks the next one. The holder's pid, host and
    start time are written into the file for the message of a refused job.

    Yields
    ------
    dict
        ``pid``, ``host``, ``since`` of this job.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this system: no protection against a second job
        logger.debug("no fcntl.flock here: %s is not locked", store.path)
        yield {}
        return
    path = lock_path(store.path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise OSError(err.errno, f"cannot create the lock file {path} of the catalogue: {err.strerror}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            raise CatalogueBusy(_busy_message(store, path, holder), holder) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield me
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
