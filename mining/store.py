"""The catalogue: an embedded SQLite database shared by jobs and the review app.

One writer, many readers (WAL mode: readers never block the writing job and
the writer never blocks them). The schema carries a version number
(``PRAGMA user_version``); :data:`MIGRATIONS` moves an older catalogue forward,
and a catalogue newer than this code is refused with both versions named.

Conventions kept in every table:

- ``tile`` is ``-1`` for a whole image, otherwise the tile's index in
  ``tiles``;
- scores: higher means more likely rare;
- JSON columns hold small dicts (configs, statistics, counts).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: Schema version this code writes and expects.
SCHEMA_VERSION = 2

#: Suffix of the ``embeddings`` names that hold a *patch set* (several local feature
#: vectors of one image, hottest first, flattened) rather than one whole-image vector;
#: readers of whole-image embeddings skip them (:func:`is_patch_set`).
PATCH_SET_SUFFIX = ".patches"


def is_patch_set(name: str) -> bool:
    """Whether the embedding ``name`` holds a patch set (see :data:`PATCH_SET_SUFFIX`)."""
    return name.endswith(PATCH_SET_SUFFIX)


def pack_patch_set(patches) -> bytes:
    """A patch set of shape (K, D) as an ``embeddings`` vector: D, then the K x D values (float32)."""
    import numpy as np

    P = np.asarray(patches, dtype=np.float32)
    if P.ndim != 2 or P.shape[1] == 0:
        raise ValueError(f"a patch set must have shape (K, D) with D > 0, got {P.shape}")
    return np.concatenate([[np.float32(P.shape[1])], P.ravel()]).astype(np.float32).tobytes()


def unpack_patch_set(blob: bytes):
    """The (K, D) float32 array of :func:`pack_patch_set`; None for a malformed vector."""
    import numpy as np

    v = np.frombuffer(blob, dtype=np.float32)
    if v.size < 2 or not float(v[0]).is_integer() or v[0] < 1 or (v.size - 1) % int(v[0]):
        return None
    return v[1:].reshape(-1, int(v[0]))


_SCHEMA_V1 = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    root TEXT,
    sha256 TEXT,
    bytes INTEGER,
    mtime_ns INTEGER,
    width INTEGER,
    height INTEGER,
    channels INTEGER,
    dtype TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'unreadable')),
    reason TEXT,
    detail TEXT,
    indexed_at REAL NOT NULL
);
CREATE INDEX images_status ON images(status);
CREATE INDEX images_sha ON images(sha256);

CREATE TABLE tiles (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    y INTEGER NOT NULL, x INTEGER NOT NULL, h INTEGER NOT NULL, w INTEGER NOT NULL,
    PRIMARY KEY (image_id, idx)
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    config TEXT,
    versions TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL DEFAULT 'running',
    counts TEXT
);

CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    config TEXT,
    classes TEXT,
    metrics TEXT,
    created_at REAL NOT NULL
);

CREATE TABLE scores (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tile INTEGER NOT NULL DEFAULT -1,
    scorer TEXT NOT NULL,
    score REAL NOT NULL,
    stats TEXT,
    map_path TEXT,
    model_id INTEGER REFERENCES models(id),
    run_id INTEGER REFERENCES runs(id),
    created_at REAL NOT NULL,
    PRIMARY KEY (image_id, tile, scorer)
);
CREATE INDEX scores_scorer ON scores(scorer, score);

CREATE TABLE embeddings (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tile INTEGER NOT NULL DEFAULT -1,
    name TEXT NOT NULL,
    vector BLOB NOT NULL,
    run_id INTEGER REFERENCES runs(id),
    PRIMARY KEY (image_id, tile, name)
);

CREATE TABLE map_coords (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tile INTEGER NOT NULL DEFAULT -1,
    method TEXT NOT NULL,
    x REAL NOT NULL,
    y REAL NOT NULL,
    run_id INTEGER REFERENCES runs(id),
    PRIMARY KEY (image_id, tile, method)
);

CREATE TABLE failures (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    image_id INTEGER REFERENCES images(id) ON DELETE CASCADE,
    tile INTEGER NOT NULL DEFAULT -1,
    scorer TEXT,
    reason TEXT NOT NULL,
    detail TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX failures_image ON failures(image_id, scorer);

CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tile INTEGER NOT NULL DEFAULT -1,
    rank INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    score REAL,
    why TEXT,
    run_id INTEGER REFERENCES runs(id),
    created_at REAL NOT NULL,
    UNIQUE (round, image_id, tile)
);
CREATE INDEX candidates_round ON candidates(round, rank);

CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tile INTEGER NOT NULL DEFAULT -1,
    candidate_id INTEGER REFERENCES candidates(id) ON DELETE SET NULL,
    reviewer TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('confirm', 'reject', 'unsure')),
    category TEXT,
    note TEXT,
    mask_path TEXT,
    source TEXT NOT NULL DEFAULT 'app',
    created_at REAL NOT NULL
);
CREATE INDEX reviews_image ON reviews(image_id, tile);

CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    review_id INTEGER REFERENCES reviews(id) ON DELETE CASCADE,
    category TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('box', 'polygon', 'mask')),
    data TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'app',
    created_at REAL NOT NULL
);
CREATE INDEX annotations_image ON annotations(image_id);

CREATE TABLE image_meta (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (image_id, key)
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
"""


def _run_script(con: sqlite3.Connection, script: str) -> None:
    # executescript() would commit the open transaction first; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            con.execute(statement)


def _migrate_0_to_1(con: sqlite3.Connection) -> None:
    _run_script(con, _SCHEMA_V1)


def _migrate_1_to_2(con: sqlite3.Connection) -> None:
    # The process that owns a run (pid, host, the process's start time against pid reuse), so a
    # later command can mark a run whose process is gone as interrupted.
    for column in ("pid INTEGER", "host TEXT", "process_started REAL"):
        con.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    # mine runs of version 1 kept their pid and host in the config
    con.execute(
        "UPDATE runs SET pid = json_extract(config, '$.job.pid'), host = json_extract(config, '$.job.host')"
        " WHERE kind = 'mine' AND json_valid(config)"
    )


#: ``MIGRATIONS[v]`` moves a catalogue from version ``v`` to ``v + 1``.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _migrate_0_to_1, 1: _migrate_1_to_2}


class SchemaVersionError(RuntimeError):
    """The catalogue was written by another version of raremine."""


def schema_version(con: sqlite3.Connection) -> int:
    """The schema version stored in a catalogue (0 for a new, empty file)."""
    return int(con.execute("PRAGMA user_version").fetchone()[0])


def migrate(con: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply forward migrations up to ``target``; return the version reached.

    Each step runs in its own transaction together with the version bump, so
    a crash leaves the catalogue at a whole version.

    Raises
    ------
    SchemaVersionError
        If the catalogue is newer than ``target``.
    """
    version = schema_version(con)
    if version > target:
        raise SchemaVersionError(
            f"catalogue has schema version {version}, this raremine expects {target}: upgrade raremine to open it"
        )
    while version < target:
        step = MIGRATIONS.get(version)
        if step is None:
            raise SchemaVersionError(f"no migration from schema version {version}")
        con.execute("BEGIN IMMEDIATE")
        try:
            step(con)
            con.execute(f"PRAGMA user_version = {version + 1}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        version += 1
    return version


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


class Store:
    """A connection to a catalogue.

    Parameters
    ----------
    path : str or path-like
        The SQLite file; created (with its parent folder) when missing unless
        ``readonly``.
    readonly : bool, optional
        Open for reading only (the review app's reads, reports): nothing is
        written, not even in a read-only folder or for a read-only file (there,
        with no pending -wal changes, the file is read as a snapshot). A
        read-only store never migrates and never creates a file; a catalogue of
        another version, an empty file or a missing one is refused.
    timeout : float, optional
        Seconds to wait for a lock before failing.
    snapshot : bool, optional
        With ``readonly``: when nobody has the catalogue open (no -wal file),
        read the main file as an immutable snapshot, so that no -wal or -shm
        file is left beside it. For short reads (``raremine status``,
        ``export``); :meth:`snapshot_changed` tells whether a writer changed
        the file meanwhile (the read may then be inconsistent: read again).

    Raises
    ------
    FileNotFoundError
        ``readonly`` and the file does not exist.
    ValueError
        A folder, a file that is not a raremine catalogue (another program's
        SQLite database, not SQLite at all, damaged, empty when ``readonly``),
        or a catalogue that cannot be read in a read-only place.
    SchemaVersionError
        The catalogue has another schema version (``readonly``) or a newer one.

    Notes
    -----
    Use it as a context manager, or call :meth:`close`. Writes go through
    :meth:`transaction`, one per shard of work, so a killed job leaves only
    whole shards behind.
    """

    def __init__(
        self, path: str | os.PathLike, *, readonly: bool = False, timeout: float = 30.0, snapshot: bool = False
    ):
        self.path = os.fspath(path)
        self.readonly = readonly
        self._open_runs: set[int] = set()  # runs started through this Store and not finished yet
        if os.path.isdir(self.path):
            raise ValueError(f"catalogue {self.path!r} is a folder: give the catalogue's file, e.g. archive.db")
        stamp = _file_stamp(self.path) if readonly and os.path.exists(self.path) else None
        self.con, self.immutable = _connect(self.path, readonly, timeout, snapshot=snapshot and readonly)
        self._stamp = stamp
        try:
            # The header is checked by SQLite on this connection, never with open(): closing
            # any other descriptor of the file would drop every POSIX lock this process holds
            # on it (the locks of the review app's other connections), and a later writer
            # could then delete the -wal file under them.
            _check_catalogue(self.con, self.path)
            if readonly:
                version = schema_version(self.con)
                if version == 0:
                    raise ValueError(
                        f"catalogue {self.path!r} is empty (no raremine tables): "
                        f"build one with `raremine index ROOT --db {self.path}`"
                    )
                if version != SCHEMA_VERSION:
                    raise SchemaVersionError(
                        f"catalogue {self.path!r} has schema version {version}, "
                        f"this raremine expects {SCHEMA_VERSION}"
                        + (
                            ": run a raremine command that writes (e.g. `raremine index`) to migrate it"
                            if version < SCHEMA_VERSION
                            else ": upgrade raremine"
                        )
                    )
            else:
                self.con.execute("PRAGMA journal_mode = WAL")
                self.con.execute("PRAGMA synchronous = NORMAL")
                migrate(self.con)
                self.close_stale_runs()
        except BaseException:
            self.con.close()
            raise

    def snapshot_changed(self) -> bool:
        """Whether the file changed since this store opened it as an immutable snapshot.

        Always False for a live connection (SQLite keeps its reads consistent).
        A snapshot is read without locks: a writer that checkpoints into the
        file meanwhile can make the read inconsistent, so read again then.
        """
        if not self.immutable or self._stamp is None:
            return False
        try:
            return _file_stamp(self.path) != self._stamp
        except OSError:
            return True

    # -- plumbing -----------------------------------------------------------------
    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._open_runs and not self.readonly:
            self._abandon_open_runs(exc)
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), rolled back on error."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def query(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        """Run a read query and return all rows."""
        return self.con.execute(sql, tuple(params)).fetchall()

    # -- images -------------------------------------------------------------------
    def known_files(self, root: str | None = None) -> dict[str, tuple[int, int, str]]:
        """Map path -> (bytes, mtime_ns, status) for indexed files (optionally under ``root``)."""
        sql = "SELECT path, bytes, mtime_ns, status FROM images"
        params: tuple = ()
        if root is not None:
            sql += " WHERE path >= ? AND path < ?"
            params = (root.rstrip(os.sep) + os.sep, root.rstrip(os.sep) + chr(ord(os.sep) + 1))
        return {r[0]: (r[1], r[2], r[3]) for r in self.con.execute(sql, params)}

    def image_id(self, path: str) -> int | None:
        """The id of an indexed path, or None."""
        row = self.con.execute("SELECT id FROM images WHERE path = ?", (path,)).fetchone()
        return None if row is None else int(row[0])

    def images(self, status: str | None = "ok") -> list[sqlite3.Row]:
        """Indexed images (only readable ones by default), ordered by id."""
        if status is None:
            return self.query("SELECT * FROM images ORDER BY id")
        return self.query("SELECT * FROM images WHERE status = ? ORDER BY id", (status,))

    def tiles(self, image_id: int) -> list[tuple[int, int, int, int, int]]:
        """(idx, y, x, h, w) of an image's tiles; empty when it is not tiled."""
        rows = self.con.execute("SELECT idx, y, x, h, w FROM tiles WHERE image_id = ? ORDER BY idx", (image_id,))
        return [tuple(r) for r in rows]

    # -- runs ---------------------------------------------------------------------
    def start_run(self, kind: str, config: dict | None = None) -> int:
        """Record the start of a job, owned by this process (pid, host, start time); return its run id."""
        from mining._versions import package_versions

        pid = os.getpid()
        with self.transaction() as con:
            cur = con.execute(
                "INSERT INTO runs (kind, config, versions, started_at, pid, host, process_started)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    json.dumps(config or {}, default=str),
                    json.dumps(package_versions()),
                    time.time(),
                    pid,
                    socket.gethostname(),
                    process_start_time(pid),
                ),
            )
        run_id = int(cur.lastrowid)
        self._open_runs.add(run_id)
        return run_id

    def finish_run(self, run_id: int, counts: dict, status: str = "done") -> None:
        """Record the end of a job with its counts.

        Parameters
        ----------
        run_id : int
        counts : dict
            JSON-ready counts (an ``error`` key for a run that did not finish).
        status : {"done", "failed", "interrupted"}, default="done"
            ``interrupted``: stopped from outside (Ctrl+C, SIGTERM, killed);
            running the same command again resumes it.
        """
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, status = ?, counts = ? WHERE id = ?",
                (time.time(), status, json.dumps(counts, default=str), run_id),
            )
        self._open_runs.discard(run_id)

    def close_stale_runs(self, kind: str | None = None, *, any_host: bool = False) -> list[int]:
        """Mark runs still ``running`` whose process is gone as ``interrupted``; return their ids.

        A run is stale when its process (pid, with the process's start time
        against reuse of the pid) no longer runs on this host. Runs of other
        hosts, and runs recorded without a pid, are left alone unless
        ``any_host``.

        Parameters
        ----------
        kind : str, optional
            Only runs of this kind (``mine``, ``index``, ...).
        any_host : bool, default=False
            Every ``running`` run of ``kind`` not started through this Store
            is stale, wherever it ran (the caller holds a lock that proves no
            other job of that kind runs on this catalogue).
        """
        sql, params = "SELECT id, kind, pid, host, process_started FROM runs WHERE status = 'running'", []
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        host = socket.gethostname()
        stale = []
        for run_id, run_kind, pid, run_host, started in self.query(sql, params):
            if run_id in self._open_runs:
                continue
            if any_host:
                stale.append((run_id, run_kind, pid, run_host))
            elif pid is not None and run_host == host and not process_alive(int(pid), started):
                stale.append((run_id, run_kind, pid, run_host))
        for run_id, run_kind, pid, run_host in stale:
            error = f"process {pid} on {run_host} ended without finishing the run (killed?)"
            with self.transaction() as con:
                con.execute(
                    "UPDATE runs SET finished_at = ?, status = 'interrupted',"
                    " counts = json_set(COALESCE(json(counts), '{}'), '$.error', ?)"
                    " WHERE id = ? AND status = 'running'",
                    (time.time(), error, run_id),
                )
            logger.info(
                "%s run %s was interrupted (%s); marked interrupted",
                run_kind,
                run_id,
                error,
                extra={"event": "stale_run", "run": run_id},
            )
        return [r[0] for r in stale]

    def _abandon_open_runs(self, exc: BaseException | None) -> None:
        """Close the runs this Store started and no one finished (the job was stopped or raised)."""
        status = "failed" if exc is not None and not isinstance(exc, KeyboardInterrupt) else "interrupted"
        error = repr(exc) if exc is not None else "the catalogue was closed before the run finished"
        for run_id in sorted(self._open_runs):
            try:
                self.finish_run(run_id, {"error": error}, status=status)
            except sqlite3.Error as err:  # the next command marks it from its dead process
                logger.warning("could not mark run %s %s: %s", run_id, status, err)
        self._open_runs.clear()

    # -- models -------------------------------------------------------------------
    def add_model(
        self,
        name: str,
        kind: str,
        path: str,
        fmt: str,
        *,
        config: dict | None = None,
        classes: list | None = None,
        metrics: dict | None = None,
    ) -> int:
        """Register a model file; return its id."""
        with self.transaction() as con:
            cur = con.execute(
                "INSERT INTO models (name, kind, path, format, config, classes, metrics, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    kind,
                    path,
                    fmt,
                    json.dumps(config or {}),
                    json.dumps(classes or []),
                    json.dumps(metrics or {}),
                    time.time(),
                ),
            )
        return int(cur.lastrowid)

    def latest_model(self, kind: str, name: str | None = None) -> sqlite3.Row | None:
        """The newest model of a kind (and name), or None."""
        sql, params = "SELECT * FROM models WHERE kind = ?", [kind]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        return self.con.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()

    # -- scores -------------------------------------------------------------------
    def scored_ids(self, scorer: str) -> set[int]:
        """Ids of images that already have an image-level score from ``scorer``."""
        rows = self.con.execute("SELECT image_id FROM scores WHERE scorer = ? AND tile = -1", (scorer,))
        return {r[0] for r in rows}

    def score_table(self, scorers: list[str] | None = None) -> tuple[list[int], list[str], dict[str, dict[int, float]]]:
        """Image-level scores as ``(image_ids, scorer_names, {scorer: {image_id: score}})``."""
        names = [r[0] for r in self.con.execute("SELECT DISTINCT scorer FROM scores WHERE tile = -1 ORDER BY scorer")]
        if scorers is not None:
            names = [n for n in names if n in scorers]
        table: dict[str, dict[int, float]] = {n: {} for n in names}
        ids: set[int] = set()
        for image_id, scorer, score in self.con.execute("SELECT image_id, scorer, score FROM scores WHERE tile = -1"):
            if scorer in table:
                table[scorer][image_id] = score
                ids.add(image_id)
        return sorted(ids), names, table

    # -- candidates and reviews ---------------------------------------------------
    def current_round(self) -> int:
        """The highest candidate round written so far (0 when none)."""
        row = self.con.execute("SELECT MAX(round) FROM candidates").fetchone()
        return int(row[0] or 0)

    def candidates(self, round: int | None = None) -> list[sqlite3.Row]:
        """Candidates of a round (the current one by default) in rank order, with their paths."""
        if round is None:
            round = self.current_round()
        return self.query(
            "SELECT c.*, i.path FROM candidates c JOIN images i ON i.id = c.image_id WHERE c.round = ? ORDER BY c.rank",
            (round,),
        )

    def add_review(
        self,
        image_id: int,
        reviewer: str,
        verdict: str,
        *,
        tile: int = -1,
        category: str | None = None,
        note: str | None = None,
        mask_path: str | None = None,
        candidate_id: int | None = None,
        source: str = "app",
    ) -> int:
        """Store one verdict (every vote is kept); return its id."""
        if verdict not in ("confirm", "reject", "unsure"):
            raise ValueError(f"verdict must be one of confirm, reject, unsure; got {verdict!r}")
        if not reviewer:
            raise ValueError("reviewer must be a non-empty name")
        with self.transaction() as con:
            cur = con.execute(
                "INSERT INTO reviews (image_id, tile, candidate_id, reviewer, verdict, category, note,"
                " mask_path, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (image_id, tile, candidate_id, reviewer, verdict, category, note, mask_path, source, time.time()),
            )
        return int(cur.lastrowid)

    # -- summary ------------------------------------------------------------------
    def status(self) -> dict:
        """What the catalogue holds, as a JSON-ready dict."""
        q = self.con.execute
        counts = dict(q("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
        reasons = dict(
            q(
                "SELECT reason, COUNT(*) FROM images WHERE status = 'unreadable' GROUP BY reason ORDER BY reason"
            ).fetchall()
        )
        scorers = dict(q("SELECT scorer, COUNT(*) FROM scores WHERE tile = -1 GROUP BY scorer").fetchall())
        verdicts = dict(q("SELECT verdict, COUNT(*) FROM reviews GROUP BY verdict").fetchall())
        return {
            "catalogue": os.path.abspath(self.path),
            "schema_version": schema_version(self.con),
            "images_ok": int(counts.get("ok", 0)),
            "images_unreadable": int(counts.get("unreadable", 0)),
            "unreadable_reasons": {k: int(v) for k, v in reasons.items()},
            "tiles": int(q("SELECT COUNT(*) FROM tiles").fetchone()[0]),
            "runs": int(q("SELECT COUNT(*) FROM runs").fetchone()[0]),
            "scores": int(q("SELECT COUNT(*) FROM scores").fetchone()[0]),
            "scores_by_scorer": {k: int(v) for k, v in scorers.items()},
            "failures": int(q("SELECT COUNT(*) FROM failures").fetchone()[0]),
            "models": int(q("SELECT COUNT(*) FROM models").fetchone()[0]),
            "candidate_rounds": self.current_round(),
            "candidates": int(q("SELECT COUNT(*) FROM candidates").fetchone()[0]),
            "reviews": int(q("SELECT COUNT(*) FROM reviews").fetchone()[0]),
            "reviews_by_verdict": {k: int(v) for k, v in verdicts.items()},
        }


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
