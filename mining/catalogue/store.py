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

The schema and its migrations live in :mod:`mining.catalogue.schema`, the SQLite
connections and error messages in :mod:`mining.catalogue.sqlite`; their names
are importable from here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from mining.catalogue.schema import (  # noqa: F401 (re-exported: callers import them from here)
    MIGRATIONS,
    SCHEMA_VERSION,
    SchemaVersionError,
    migrate,
    schema_version,
)
from mining.catalogue.sqlite import (  # noqa: F401 (re-exported: callers import them from here)
    _check_catalogue,
    _connect,
    _file_stamp,
    describe_sqlite_error,
    process_alive,
    process_start_time,
)

logger = logging.getLogger(__name__)


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
