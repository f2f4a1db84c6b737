"""SQLite connections to a catalogue (WAL, read-only snapshots), the foreign-file check, error messages, liveness."""

from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse

from mining.catalogue.schema import schema_version

logger = logging.getLogger(__name__)


#: SQLite errors of a read-only connection that cannot create the -shm (wal-index) or -wal file beside the
#: catalogue (a read-only folder, or -wal/-shm files it may not open).
_NO_WAL_INDEX = {"SQLITE_READONLY_DIRECTORY", "SQLITE_CANTOPEN", "SQLITE_READONLY_CANTINIT", "SQLITE_READONLY_RECOVERY"}


def _file_stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _open_ro(path: str, timeout: float, immutable: bool) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)


def _connect_readonly(path: str, timeout: float, snapshot: bool) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection that writes nothing; returns it and whether it reads an immutable snapshot.

    SQLite's WAL mode lets a reader in only through the wal-index (the -shm
    file), which a ``mode=ro`` connection creates, with an empty -wal, when
    nobody has the catalogue open, and leaves behind; in a read-only folder it
    cannot create them and fails. Both cases are answered with ``immutable=1``
    when no -wal file holds changes (nothing lives outside the main file then):
    SQLite reads the main file without locks or side files.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"catalogue {path!r} does not exist")
    wal, journal = path + "-wal", path + "-journal"
    if snapshot and not os.path.exists(wal) and not os.path.exists(journal):
        logger.debug("catalogue %r: nobody has it open; reading the file as a snapshot (no -wal/-shm created)", path)
        return _open_ro(path, timeout, immutable=True), True
    con = _open_ro(path, timeout, immutable=False)
    try:
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the first read opens the WAL
        return con, False
    except sqlite3.OperationalError as err:
        con.close()
        if getattr(err, "sqlite_errorname", "") not in _NO_WAL_INDEX:
            raise
        wal_bytes = os.path.getsize(wal) if os.path.exists(wal) else 0
        if wal_bytes or os.path.exists(journal):
            raise ValueError(
                f"catalogue {path!r} cannot be read here: its "
                + (f"-wal file holds {wal_bytes} bytes of recent changes" if wal_bytes else "-journal file is there")
                + f" and SQLite needs write access to the folder {os.path.dirname(os.path.abspath(path))!r} to read "
                f"them ({err}); run a raremine command that writes (e.g. `raremine index`) once with write access, "
                "which folds them into the main file, or copy the catalogue with its -wal file to a writable folder"
            ) from None
        logger.log(
            logging.INFO if snapshot else logging.WARNING,
            "catalogue %r is in a read-only place (%s): reading the file as a snapshot; "
            "changes made while it is open are not seen",
            path,
            err,
        )
        return _open_ro(path, timeout, immutable=True), True


def _connect(path: str, readonly: bool, timeout: float, snapshot: bool = False) -> tuple[sqlite3.Connection, bool]:
    if readonly:
        con, immutable = _connect_readonly(path, timeout, snapshot)
    else:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        con, immutable = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False), False
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return con, immutable


def _check_catalogue(con: sqlite3.Connection, path: str) -> None:
    """Refuse a file that is not an SQLite database, or an SQLite database of another program."""
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise ValueError(describe_sqlite_error(path, err)) from None
    if tables and schema_version(con) == 0:
        raise ValueError(
            f"{path!r} is not a raremine catalogue: an SQLite database of another program"
            f" (tables {', '.join(sorted(tables)[:5])}); give a new file name or a raremine catalogue"
        )


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_start_time(pid: int) -> float | None:
    """When a process started (seconds since the epoch), from ``/proc``; None where unknown.

    Kept with a run beside its pid, so a pid reused by another process is not
    mistaken for the run's owner.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        ticks = int(data[data.rindex(b")") + 2 :].split()[19])  # field 22, starttime
        boot = _boot_time()
        return None if boot is None else boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` of this host runs (and is the one that started at ``started``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is not None:
        now = process_start_time(pid)
        if now is not None and abs(now - float(started)) > 2.0:
            return False  # the pid was reused
    return True


def describe_sqlite_error(path: str | os.PathLike, err: sqlite3.Error) -> str:
    """A message for an SQLite error met on the catalogue ``path``: what it means and what to do.

    Parameters
    ----------
    path : path
        The catalogue.
    err : sqlite3.Error
        The error (its ``sqlite_errorname`` decides the wording).

    Returns
    -------
    str
    """
    path = os.fspath(path)
    name = getattr(err, "sqlite_errorname", "") or ""
    if name == "SQLITE_NOTADB" or "not a database" in str(err):
        return f"{path!r} is not a raremine catalogue (not an SQLite database: {err})"
    if name.startswith("SQLITE_CORRUPT") or "malformed" in str(err):
        return (
            f"catalogue {path!r} is damaged ({err}): check it with "
            f"`sqlite3 {path} 'PRAGMA integrity_check'` and restore it from a backup"
        )
    if name.startswith("SQLITE_READONLY"):
        return f"catalogue {path!r} cannot be written ({err}): this command needs write access to it and its folder"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"catalogue {path!r} is locked by another process ({err}): try again when it is done"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return f"catalogue {path!r} cannot be opened ({err}): check that it is a readable file"
    return f"catalogue {path!r}: SQLite error {name or type(err).__name__} ({err})"
