"""The catalogue's schema, its version (``PRAGMA user_version``) and the migrations that move it forward."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

#: Schema version this code writes and expects.
SCHEMA_VERSION = 2


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
