"""The catalogue store: schema, migrations, WAL readers during writes."""

import sqlite3
import threading
import time

import pytest

from mining.catalogue import store as store_mod
from mining.catalogue.store import SCHEMA_VERSION, SchemaVersionError, Store, migrate, schema_version

EXPECTED_TABLES = {
    "images",
    "tiles",
    "runs",
    "models",
    "scores",
    "embeddings",
    "map_coords",
    "failures",
    "candidates",
    "reviews",
    "annotations",
    "image_meta",
    "meta",
}


def _add_image(store, path="/a/x.png"):
    with store.transaction() as con:
        return con.execute(
            "INSERT INTO images (path, status, indexed_at) VALUES (?, 'ok', 0) RETURNING id", (path,)
        ).fetchone()[0]


def test_new_catalogue_has_schema_wal_and_foreign_keys(tmp_path):
    with Store(tmp_path / "c.db") as s:
        tables = {r[0] for r in s.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert EXPECTED_TABLES <= tables
        assert schema_version(s.con) == SCHEMA_VERSION
        assert s.query("PRAGMA journal_mode")[0][0] == "wal"
        assert s.query("PRAGMA foreign_keys")[0][0] == 1
        with pytest.raises(sqlite3.IntegrityError):
            with s.transaction() as con:
                con.execute("INSERT INTO scores (image_id, scorer, score, created_at) VALUES (999, 'x', 1, 0)")


def test_reopen_keeps_data_and_version(tmp_path):
    with Store(tmp_path / "c.db") as s:
        _add_image(s)
    with Store(tmp_path / "c.db") as s:
        assert len(s.images()) == 1
        assert schema_version(s.con) == SCHEMA_VERSION


def test_migration_from_empty_file(tmp_path):
    con = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    assert schema_version(con) == 0
    assert migrate(con) == SCHEMA_VERSION
    assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0


def test_failed_migration_leaves_whole_version(tmp_path, monkeypatch):
    def broken(con):
        con.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    monkeypatch.setitem(store_mod.MIGRATIONS, 0, broken)
    con = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    with pytest.raises(RuntimeError, match="boom"):
        migrate(con)
    assert schema_version(con) == 0
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in names


def test_newer_catalogue_is_refused_with_both_versions(tmp_path):
    path = tmp_path / "new.db"
    with Store(path):
        pass
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(SchemaVersionError, match=rf"99.*expects {SCHEMA_VERSION}"):
        Store(path)
    with pytest.raises(SchemaVersionError, match="99"):
        Store(path, readonly=True)


def test_not_a_database_is_refused(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a raremine catalogue"):
        Store(bad)


def test_readonly_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Store(tmp_path / "nope.db", readonly=True)


def test_reader_is_not_blocked_by_open_write_transaction(tmp_path):
    path = tmp_path / "c.db"
    writer = Store(path)
    _add_image(writer, "/a/1.png")
    reader = Store(path, readonly=True, timeout=0.5)
    writer.con.execute("BEGIN IMMEDIATE")
    writer.con.execute("INSERT INTO images (path, status, indexed_at) VALUES ('/a/2.png', 'ok', 0)")
    # the reader sees the last committed state at once, without waiting for the lock
    assert [r["path"] for r in reader.images()] == ["/a/1.png"]
    writer.con.execute("COMMIT")
    assert len(reader.images()) == 2
    reader.close()
    writer.close()


def test_readers_during_many_writes(tmp_path):
    path = tmp_path / "c.db"
    writer = Store(path)
    errors, counts = [], [[], []]
    stop = threading.Event()

    def read_loop(seen):
        r = Store(path, readonly=True, timeout=1.0)
        try:
            while not stop.is_set():
                seen.append(r.query("SELECT COUNT(*) FROM images")[0][0])
        except Exception as err:
            errors.append(err)
        finally:
            r.close()

    threads = [threading.Thread(target=read_loop, args=(c,)) for c in counts]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while not all(counts) and time.monotonic() < deadline:  # every reader is reading (a loaded machine is slow)
        time.sleep(0.01)
    for i in range(200):
        _add_image(writer, f"/a/{i}.png")
    stop.set()
    for t in threads:
        t.join()
    writer.close()
    assert not errors
    for seen in counts:
        # every read succeeds and sees whole commits only, in order
        assert seen, "a reader made no read at all"
        assert seen == sorted(seen)
        assert max(seen) <= 200


def test_reviews_keep_every_vote_and_validate(tmp_path):
    with Store(tmp_path / "c.db") as s:
        iid = _add_image(s)
        s.add_review(iid, "ana", "confirm", category="crack")
        s.add_review(iid, "ben", "reject")
        assert s.status()["reviews"] == 2
        with pytest.raises(ValueError, match="verdict must be one of"):
            s.add_review(iid, "ana", "maybe")
        with pytest.raises(ValueError, match="reviewer"):
            s.add_review(iid, "", "confirm")


def test_status_counts(tmp_path):
    with Store(tmp_path / "c.db") as s:
        _add_image(s)
        with s.transaction() as con:
            con.execute("INSERT INTO images (path, status, reason, indexed_at) VALUES ('/b', 'unreadable', 'empty', 0)")
        st = s.status()
    assert st["images_ok"] == 1
    assert st["images_unreadable"] == 1
    assert st["unreadable_reasons"] == {"empty": 1}
