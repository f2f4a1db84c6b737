"""Faults of the mining job and its run bookkeeping: nothing lost, a recorded reason, a documented exit code,
no process left behind, no hang.

- a map PNG that cannot be written keeps its score (``map_unwritable``) and a later run writes the map;
- ``kill -9`` and SIGTERM of ``raremine mine`` leave no forkserver, resource tracker or worker behind, and a
  caller reading the job's stdout gets end-of-file; SIGTERM and Ctrl+C record the run as ``interrupted``;
- a run whose process is gone (a killed ``index`` or ``mine``) is marked ``interrupted`` by the next command;
- one mine job at a time per catalogue: a second one is refused at once (exit 3) naming the holder, and a
  dead holder does not block.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

import mining.job.worker as worker_mod
from mining.catalogue.store import Store, process_start_time
from mining.job.mine import MAP_UNWRITABLE, CatalogueBusy, catalogue_lock, lock_path, maps_dir, mine
from mining.scorers import get_scorer
from raremine.cli import EXIT_BUSY, app
from tests import batch_helpers
from tests.conftest import run_python

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 48


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """A catalogue of 48 small noise PNGs, indexed once; tests copy it."""
    archive = batch_helpers.noise_archive(tmp_path_factory.mktemp("faults_archive"), N_IMAGES, 3)
    return batch_helpers.indexed_catalogue(archive, tmp_path_factory.mktemp("faults_db"))


@pytest.fixture(autouse=True)
def _test_scorers(monkeypatch):
    monkeypatch.setitem(__import__("mining.scorers").scorers.SCORERS, "slow", "tests.batch_helpers:SlowScorer")


def rows(db: Path, sql: str, params=()) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


scores_of = batch_helpers.scores_of


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``raremine`` (with the test scorers) in a subprocess; a hang fails the test."""
    return run_python([str(batch_helpers.HELPER), *args], cwd=ROOT, env=env, timeout=timeout)


start_job = batch_helpers.start_job


def slow_mine_args(db: Path) -> tuple[str, ...]:
    return ("mine", "--db", str(db), "--scorers", "slow", "--workers", "2", "--shard-size", "2")


def wait_until_mining(job: subprocess.Popen, db: Path, workers: int = 2, timeout: float = 60) -> list[psutil.Process]:
    """Wait until the job has written scores and runs its pool; return its descendants then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None:
        kids = psutil.Process(job.pid).children(recursive=True)
        scored = rows(db, "SELECT COUNT(*) FROM scores")[0][0] if db.exists() else 0
        # the forkserver, the resource tracker and the workers
        if scored >= 4 and len(kids) >= workers + 2:
            return kids
        time.sleep(0.1)
    job.kill()
    out, err = job.communicate(timeout=10)
    pytest.fail(f"the job did not start mining in time (rc {job.returncode}): {out}\n{err}")


def assert_all_gone(procs: list[psutil.Process], timeout: float = 15) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    try:
        assert not alive, f"left running after the job ended: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        for p in alive:  # do not leave them to the next test
            p.kill()


# -- 2. maps that cannot be written ---------------------------------------------------------------------
@pytest.mark.slow
def test_unwritable_maps_keep_the_scores_and_a_later_run_writes_them(db):
    blocker = Path(maps_dir(str(db)))
    blocker.write_text("not a folder")  # <catalogue>.maps is a file
    args = ("mine", "--db", str(db), "--scorers", "contrast", "--workers", "2", "--shard-size", "8")
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert f"mined {N_IMAGES} images" in res.stdout and "failed: none" in res.stdout
    assert f"maps not written: {N_IMAGES}" in res.stdout
    assert f"{N_IMAGES} score maps could not be written to {blocker}" in res.stderr
    assert "run the same command again to write them" in res.stderr
    first = scores_of(db)
    assert len(first) == N_IMAGES, "every score is kept"
    assert rows(db, "SELECT COUNT(*) FROM scores WHERE map_path IS NOT NULL")[0][0] == 0
    reasons = rows(db, "SELECT reason, COUNT(*) FROM failures GROUP BY reason")
    assert reasons == [(MAP_UNWRITABLE, N_IMAGES)]
    assert "NotADirectoryError" in rows(db, "SELECT detail FROM failures LIMIT 1")[0][0]

    # still blocked: nothing is lost, nothing counts as failed before, no duplicated record
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert f"skipped {N_IMAGES} already scored, 0 failed before" in res.stdout
    assert f"{N_IMAGES} maps of earlier runs are still missing" in res.stderr
    assert rows(db, "SELECT COUNT(*) FROM failures")[0][0] == N_IMAGES

    blocker.unlink()  # the folder can be written now: the next run writes the missing maps
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert f"{N_IMAGES} images scored again to write maps missing before" in res.stdout
    assert "maps not written" not in res.stdout
    assert scores_of(db) == pytest.approx(first)
    paths = [r[0] for r in rows(db, "SELECT map_path FROM scores WHERE tile = -1")]
    assert len(paths) == N_IMAGES and all(p and os.path.isfile(p) for p in paths)
    assert rows(db, "SELECT COUNT(*) FROM failures")[0][0] == 0
    counts = json.loads(rows(db, "SELECT counts FROM runs WHERE kind = 'mine' ORDER BY id DESC LIMIT 1")[0][0])
    assert counts["maps_retried"] == N_IMAGES and counts["maps_unwritable"] == 0


def test_full_disk_keeps_scores_leaves_no_partial_png_and_warns(db, monkeypatch, caplog):
    real_open = open
    calls = {"n": 0}

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])  # part of it fits, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def every_other_map_fails(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        if str(path).endswith(".png"):
            calls["n"] += 1
            if calls["n"] % 2 == 0:
                return FullDisk(f)
        return f

    monkeypatch.setattr(worker_mod, "open", every_other_map_fails, raising=False)
    with Store(db) as store, caplog.at_level("WARNING", logger="mining"):
        s = mine(store, [get_scorer("contrast")], backend="inline", shard_size=8)
    assert s.done == N_IMAGES and not s.failed and s.maps_unwritable == N_IMAGES // 2
    assert any(f"{N_IMAGES // 2} score maps could not be written" in r.getMessage() for r in caplog.records)
    assert len(scores_of(db)) == N_IMAGES
    details = [r[0] for r in rows(db, "SELECT detail FROM failures WHERE reason = ?", (MAP_UNWRITABLE,))]
    assert len(details) == N_IMAGES // 2 and all("No space left on device" in d for d in details)
    folder = Path(maps_dir(str(db))) / "contrast"
    assert sorted(p.name for p in folder.iterdir() if ".tmp" in p.name) == [], "no half-written PNG"
    assert len(list(folder.iterdir())) == N_IMAGES // 2

    monkeypatch.undo()  # space again: the next run writes what is missing
    with Store(db) as store:
        s = mine(store, [get_scorer("contrast")], backend="inline", shard_size=8)
    assert s.maps_retried == N_IMAGES // 2 and s.maps_unwritable == 0
    assert rows(db, "SELECT COUNT(*) FROM scores WHERE map_path IS NULL")[0][0] == 0
    assert len(list(folder.iterdir())) == N_IMAGES and rows(db, "SELECT COUNT(*) FROM failures")[0][0] == 0


# -- 6. kill -9 / SIGTERM: no process left, EOF for the caller --------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killed_job_leaves_no_process_and_its_stdout_ends(db, sig):
    job = start_job(*slow_mine_args(db), env={"RAREMINE_TEST_DELAY": "0.2"})
    family = wait_until_mining(job, db)
    os.kill(job.pid, sig)
    try:
        _, err = job.communicate(timeout=20)  # EOF on stdout and stderr: nobody holds them any more
    except subprocess.TimeoutExpired:
        for p in family:
            p.kill()
        job.kill()
        pytest.fail("stdout of the killed job never reached end-of-file (a process of the job holds it)")
    finally:
        assert_all_gone(family)
    status = rows(db, "SELECT status FROM runs WHERE kind = 'mine'")[0][0]
    if sig == signal.SIGTERM:
        assert job.returncode == 128 + signal.SIGTERM, err
        assert status == "interrupted"
        assert "run the same command again to resume" in err
        counts = json.loads(rows(db, "SELECT counts FROM runs WHERE kind = 'mine'")[0][0])
        assert "SIGTERM" in counts["error"]
    else:
        assert job.returncode == -signal.SIGKILL
        assert status == "running"
        # 9a: a read-only command (status) writes nothing; the next command that writes sees the
        # job's process is gone and marks the run
        res = CliRunner().invoke(app, ["status", "--db", str(db)])
        assert res.exit_code == 0, res.output
        assert rows(db, "SELECT status FROM runs WHERE kind = 'mine'")[0][0] == "running"
        res = CliRunner().invoke(app, ["rank", "--db", str(db), "--n", "1"])
        assert res.exit_code == 0, res.output
        assert rows(db, "SELECT status FROM runs WHERE kind = 'mine'")[0][0] == "interrupted"
    kept = rows(db, "SELECT COUNT(*) FROM scores")[0][0]
    assert kept >= 4 and kept % 2 == 0, "only whole shards are written"
    res = cli(*slow_mine_args(db), env={"RAREMINE_TEST_DELAY": "0"})  # resume
    assert res.returncode == 0, res.stderr
    assert f"skipped {kept} already scored" in res.stdout and len(scores_of(db, "slow")) == N_IMAGES


PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(
    "lifeline",
    [
        pytest.param(
            "from mining.job.mine import die_with_parent\nassert die_with_parent()\n",
            marks=pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's"),
            id="pdeathsig",
        ),
        pytest.param("import os\nfrom mining.job.mine import _watch_job\n_watch_job(os.getppid(), 0.05)\n", id="watch"),
    ],
)
def test_worker_lifeline_ends_it_with_its_parent(lifeline):
    """What keeps a pool worker from outliving its job: PR_SET_PDEATHSIG, and a thread watching the job's pid."""
    child_code = lifeline + "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"  # on the parent's stdout
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert parent.stdout.readline().strip() == "ready"  # the child has set its lifeline
        parent.kill()
        parent.wait(timeout=10)
        _, alive = psutil.wait_procs([child], timeout=10)
        assert not alive, "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and child.is_running():
            child.kill()


# -- 9a. runs whose process is gone, Ctrl+C --------------------------------------------------------------
def test_run_of_a_dead_process_is_marked_interrupted_by_the_next_command(db):
    # an index job killed without a chance to finish its run
    code = (
        "import os, sys\nfrom mining.catalogue.store import Store\nStore(sys.argv[1]).start_run('index')\nos._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], timeout=60, check=False)
    store = Store(db)
    reused = store.start_run("index")  # a live pid whose process started after the run: another process
    store.con.execute("UPDATE runs SET process_started = process_started - 3600 WHERE id = ?", (reused,))
    mine_run = store.start_run("mine")  # this process's own run, still going
    store._open_runs.clear()  # as if other processes had started them
    store.close()
    (dead, dead_pid, host), (_, pid2, _), _ = rows(db, "SELECT id, pid, host FROM runs WHERE id > 1 ORDER BY id")
    assert host == socket.gethostname() and pid2 == os.getpid() and dead_pid != os.getpid()
    res = CliRunner().invoke(app, ["status", "--db", str(db)])  # read-only: reports, never writes
    assert res.exit_code == 0, res.output
    assert dict(rows(db, "SELECT id, status FROM runs WHERE id > 1"))[reused] == "running"
    empty = db.parent / "nothing-new"
    empty.mkdir()
    res = CliRunner().invoke(app, ["index", str(empty), "--db", str(db)])  # the next command that writes
    assert res.exit_code == 0, res.output
    status = dict(rows(db, "SELECT id, status FROM runs WHERE id IN (?, ?, ?)", (dead, reused, mine_run)))
    assert status == {dead: "interrupted", reused: "interrupted", mine_run: "running"}
    counts = json.loads(rows(db, "SELECT counts FROM runs WHERE id = ?", (dead,))[0][0])
    assert f"process {dead_pid} on {host} ended without finishing" in counts["error"]
    assert abs(process_start_time(os.getpid()) - rows(db, "SELECT process_started FROM runs")[-1][0]) < 2


def test_ctrl_c_of_index_and_mine_marks_the_run_interrupted(db, tmp_path, monkeypatch):
    import mining.catalogue.index

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    archive = tmp_path / "more"
    archive.mkdir()
    cv2.imwrite(str(archive / "x.png"), np.zeros((8, 8), np.uint8))
    monkeypatch.setattr(mining.catalogue.index, "_inspect_chunk", interrupted)
    res = CliRunner().invoke(app, ["index", str(archive), "--db", str(db)])
    assert res.exit_code == 130, res.output
    assert rows(db, "SELECT status FROM runs WHERE kind = 'index' ORDER BY id DESC LIMIT 1") == [("interrupted",)]

    seen = []

    def stop_after_2(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with Store(db) as store, pytest.raises(KeyboardInterrupt):
        mine(store, [get_scorer("contrast")], backend="process", workers=2, shard_size=4, progress=stop_after_2)
    status, counts = rows(db, "SELECT status, counts FROM runs WHERE kind = 'mine'")[0]
    assert status == "interrupted" and "KeyboardInterrupt" in json.loads(counts)["error"]
    assert len(scores_of(db)) == 8, "the shards written before Ctrl+C are kept"
    with Store(db) as store:  # and the next run resumes
        s = mine(store, [get_scorer("contrast")], backend="inline")
    assert s.skipped == 8 and s.done == N_IMAGES - 8


# -- 9b. one job at a time ---------------------------------------------------------------------------
@pytest.mark.slow
def test_second_job_is_refused_at_once_naming_the_holder(db):
    job = start_job(*slow_mine_args(db), env={"RAREMINE_TEST_DELAY": "1.0"})
    try:
        family = wait_until_mining(job, db)
        t0 = time.monotonic()
        res = cli("mine", "--db", str(db), "--scorers", "slow", "--backend", "inline", timeout=60)
        assert res.returncode == EXIT_BUSY, res.stderr
        assert time.monotonic() - t0 < 20, "refused at once, not after waiting"
        run_id = rows(db, "SELECT id FROM runs WHERE kind = 'mine'")[0][0]
        for part in (f"run {run_id}", f"pid {job.pid}", f"host {socket.gethostname()}", "since ", str(db)):
            assert part in res.stderr, (part, res.stderr)
        assert "one mine job at a time" in res.stderr and f"kill {job.pid}" in res.stderr
        assert len(rows(db, "SELECT id FROM runs WHERE kind = 'mine'")) == 1, "the refused job recorded no run"
        os.kill(job.pid, signal.SIGKILL)  # a dead holder does not block
        job.communicate(timeout=20)
        assert_all_gone(family)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    res = cli(*slow_mine_args(db), env={"RAREMINE_TEST_DELAY": "0"})
    assert res.returncode == 0, res.stderr
    assert len(scores_of(db, "slow")) == N_IMAGES
    assert [r[0] for r in rows(db, "SELECT status FROM runs WHERE kind = 'mine' ORDER BY id")] == [
        "interrupted",
        "done",
    ]


def test_lock_is_held_per_catalogue_and_released(db, tmp_path):
    with Store(db) as store:
        with catalogue_lock(store) as me:
            assert me["pid"] == os.getpid()
            with pytest.raises(CatalogueBusy, match=rf"pid {os.getpid()} on host .*since .*one mine job at a time"):
                mine(store, [get_scorer("contrast")], backend="inline")
            other = tmp_path / "other.db"
            shutil.copy(db, other)
            with Store(other) as second:  # another catalogue is not held
                assert mine(second, [get_scorer("contrast")], backend="inline", save_maps=False).done == N_IMAGES
        # a lock file left by a dead holder: its content does not block, only a live flock does
        Path(lock_path(str(db))).write_text(json.dumps({"pid": 999999, "host": "gone", "since": 0}))
        s = mine(store, [get_scorer("contrast")], backend="inline", save_maps=False)
    assert s.done == N_IMAGES
    assert Path(lock_path(str(db))).read_text() == "", "the holder's record is cleared on release"


def test_version_1_catalogue_migrates_and_keeps_its_mine_runs_owner(tmp_path):
    from mining.catalogue.store import SCHEMA_VERSION, migrate, schema_version

    path = tmp_path / "v1.db"
    con = sqlite3.connect(path, isolation_level=None)
    migrate(con, target=1)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=60)
    config = json.dumps({"job": {"pid": gone.pid, "host": socket.gethostname()}})
    con.execute("INSERT INTO runs (kind, config, started_at) VALUES ('mine', ?, 0)", (config,))
    con.execute("INSERT INTO runs (kind, config, started_at) VALUES ('index', '{}', 0)")
    con.close()
    with Store(path) as store:  # migrated, and the v1 mine run of a dead pid is closed
        assert schema_version(store.con) == SCHEMA_VERSION == 2
        got = [tuple(r) for r in store.query("SELECT kind, pid, host, status FROM runs ORDER BY id")]
    # the v1 index run has no owner on record: left alone rather than guessed
    assert got == [("mine", gone.pid, socket.gethostname(), "interrupted"), ("index", None, None, "running")]
