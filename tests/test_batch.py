"""Batch mining at scale: kill and resume, backends agree, bad configs, failing images, dying workers."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mining.catalogue.store import Store
from mining.config import Config, load_config
from mining.job.mine import (
    BATCH_IMAGES,
    SHARD_SIZE,
    WORKER_MALLOC_ENV,
    _run_shards,
    _worker_state,
    count_pending,
    iter_pending_work,
    mine,
    pending_work,
    score_shard,
)
from mining.scorers import get_scorer
from raremine.cli import app
from tests import batch_helpers

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 96


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """96 small textures; image 10 is constant (the flaky and dying scorers trip on it)."""
    return batch_helpers.noise_archive(tmp_path_factory.mktemp("batch_archive"), N_IMAGES, 1, constant=10)


@pytest.fixture(scope="module")
def indexed(archive, tmp_path_factory) -> Path:
    """A catalogue of the archive, indexed once; tests copy it."""
    return batch_helpers.indexed_catalogue(archive, tmp_path_factory.mktemp("batch_db"))


@pytest.fixture(autouse=True)
def _test_scorers(monkeypatch):
    for cls in (
        batch_helpers.SlowScorer,
        batch_helpers.FlakyScorer,
        batch_helpers.BatchFlakyScorer,
        batch_helpers.DyingScorer,
    ):
        monkeypatch.setitem(
            __import__("mining.scorers").scorers.SCORERS, cls.name, f"tests.batch_helpers:{cls.__name__}"
        )


scores_of = batch_helpers.scores_of


def reference_scores(indexed: Path, tmp_path: Path) -> dict[int, float]:
    ref = tmp_path / "ref.db"
    shutil.copy(indexed, ref)
    with Store(ref) as store:
        mine(store, [get_scorer("contrast")], backend="inline", save_maps=False)
    return scores_of(ref, "contrast")


# -- kill and resume -------------------------------------------------------------------
_helper_cli = batch_helpers.start_job


def test_sigkill_then_resume_gives_identical_scores_and_no_duplicates(db, indexed, tmp_path):
    args = (
        "mine",
        "--db",
        str(db),
        "--scorers",
        "slow",
        "--workers",
        "2",
        "--shard-size",
        "4",
        "--set",
        "mine.save_maps=false",
    )
    job = _helper_cli(*args, env={"RAREMINE_TEST_DELAY": "0.05"})
    deadline = time.monotonic() + 60
    scored = 0
    while time.monotonic() < deadline and job.poll() is None:
        with Store(db, readonly=True) as ro:
            scored = ro.query("SELECT COUNT(*) FROM scores")[0][0]
        if scored >= 12:
            break
        time.sleep(0.05)
    assert job.poll() is None, f"job ended before it could be killed: {job.communicate()}"
    os.kill(job.pid, signal.SIGKILL)  # the writer dies at an arbitrary point
    job.wait(timeout=10)
    try:
        os.killpg(job.pid, signal.SIGKILL)  # orphaned pool workers of the killed job
    except ProcessLookupError:
        pass
    with Store(db, readonly=True) as ro:
        at_kill = ro.query("SELECT COUNT(*) FROM scores")[0][0]
        assert ro.query("SELECT status FROM runs WHERE kind = 'mine'")[0][0] == "running"
    assert 12 <= at_kill < N_IMAGES
    assert at_kill % 4 == 0, "only whole shards are committed"

    resumed = _helper_cli(*args, env={"RAREMINE_TEST_DELAY": "0"})
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"skipped {at_kill} already scored" in out

    assert scores_of(db, "slow") == reference_scores(indexed, tmp_path)
    with Store(db, readonly=True) as ro:
        assert ro.query("SELECT COUNT(*) FROM scores")[0][0] == N_IMAGES
        dupes = ro.query("SELECT image_id, tile, scorer FROM scores GROUP BY 1, 2, 3 HAVING COUNT(*) > 1")
        assert dupes == []
        assert ro.query("SELECT COUNT(*) FROM failures")[0][0] == 0
        runs = ro.query("SELECT id, status, counts, config FROM runs WHERE kind = 'mine' ORDER BY id")
    assert [r["status"] for r in runs] == ["interrupted", "done"]
    counts = json.loads(runs[1]["counts"])
    assert counts["done"] == N_IMAGES - at_kill and counts["skipped"] == at_kill
    cfg = json.loads(runs[1]["config"])
    assert cfg["mine"]["shard_size"] == 4 and cfg["mine"]["save_maps"] is False and "versions" not in cfg


# -- backends agree ---------------------------------------------------------------------
def test_default_shard_size_follows_the_backend(db):
    """No shard_size: 64 images a shard in this process or a pool, recorded with the run."""
    with Store(db) as store:
        s = mine(store, [get_scorer("contrast")], backend="inline", save_maps=False)
        job = json.loads(store.query("SELECT config FROM runs WHERE id = ?", (s.run_id,))[0]["config"])["job"]
    assert s.done == N_IMAGES and s.shards == 2 and job["shard_size"] == SHARD_SIZE["inline"] == 64
    assert SHARD_SIZE == {"inline": 64, "process": 64, "dask": 256}


def test_dask_local_cluster_equals_local_run(db, indexed, tmp_path):
    with Store(db) as store:
        s = mine(store, [get_scorer("contrast")], backend="dask", workers=2, shard_size=8, save_maps=False)
    assert s.done == N_IMAGES and s.workers == 2 and not s.failed
    assert scores_of(db, "contrast") == reference_scores(indexed, tmp_path)


def test_dask_job_keeps_no_message_logs_and_restores_config(db):
    """The LocalCluster's streams keep no sent batches (they held every shard: +50 KB per task)."""
    import dask

    from mining.job import _dask

    seen = {}
    real_close = _dask.DaskExecutor.close

    def close(self):
        sched = self.cluster.scheduler
        streams = [*sched.stream_comms.values(), self.client.scheduler_comm]
        seen["logs"] = [len(bs.recent_message_log) for bs in streams]
        seen["transitions"] = len(sched.transition_log)
        seen["env"] = self.client.run(
            lambda: (os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        )
        real_close(self)

    before = dask.config.get("distributed.admin.low-level-log-length")
    env_before = {k: os.environ.get(k) for k in (*WORKER_MALLOC_ENV, "OMP_NUM_THREADS")}
    _dask.DaskExecutor.close = close
    try:
        with Store(db) as store:
            s = mine(store, [get_scorer("contrast")], backend="dask", workers=2, save_maps=False)
    finally:
        _dask.DaskExecutor.close = real_close
    assert s.done == N_IMAGES and s.shards == 1  # dask's default shard: 256 images (SHARD_SIZE)
    assert len(seen["logs"]) >= 3 and not any(seen["logs"]) and seen["transitions"] == 0
    assert dask.config.get("distributed.admin.low-level-log-length") == before
    # the workers run with the process pool's malloc settings, not dask's MALLOC_TRIM_THRESHOLD_=65536
    want = (WORKER_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"], WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"])
    assert len(seen["env"]) == 2 and set(seen["env"].values()) == {want}
    # dask's nannies set them in this process's environment too; the job puts it back
    assert {k: os.environ.get(k) for k in (*WORKER_MALLOC_ENV, "OMP_NUM_THREADS")} == env_before


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_worker_malloc_settings_reuse_image_buffers():
    """With the workers' malloc settings, image-sized temporaries stop faulting in fresh pages.

    Each case runs in a fresh interpreter (the settings are process-wide): 500 rounds of
    256 x 256 float32 temporaries, counted in minor page faults.
    """
    code = (
        "import resource, sys, numpy as np, mining.job.mine as m\n"
        "ok = m.tune_worker_malloc() if sys.argv[1] == '1' else None\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(500):\n"
        "    a = np.ones((256, 256), np.float32); b = a * 2; c = np.ones((300, 200), np.float32); del a, b, c\n"
        "print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, arg], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.split()
        for arg in ("0", "1")
    ]
    (_, plain), (ok, tuned) = runs
    assert ok == "True"
    assert int(tuned) < 0.1 * int(plain), (plain, tuned)


def test_process_pool_equals_inline_and_keeps_bounded_in_flight(db, indexed, tmp_path):
    with Store(db) as store:
        s = mine(store, [get_scorer("contrast")], backend="process", workers=2, shard_size=5, max_in_flight=2)
        maps = os.listdir(os.path.join(os.path.splitext(db)[0] + ".maps", "contrast"))
    assert s.done == N_IMAGES and s.shards == -(-N_IMAGES // 5)
    assert len(maps) == N_IMAGES
    assert scores_of(db, "contrast") == reference_scores(indexed, tmp_path)


class _Recorder:
    """An executor that records how many shards are in flight."""

    slots = 2
    breaks_all = False

    def __init__(self):
        self.live, self.peak = set(), 0

    def submit(self, shard):
        from concurrent.futures import Future

        fut = Future()
        fut.set_result([{"image_id": i["image_id"]} for i in shard])
        self.live.add(fut)
        self.peak = max(self.peak, len(self.live))
        return fut

    def wait_any(self, futures):
        done = {futures[0]}
        self.live -= done
        return done

    def result(self, fut):
        return fut.result()


def test_at_most_max_in_flight_shards_are_submitted():
    from mining.job.mine import MineSummary

    ex, got = _Recorder(), []
    shards = ([{"image_id": i * 10 + j} for j in range(10)] for i in range(50))
    _run_shards(ex, shards, got.extend, lambda *a: None, max_in_flight=3, retries=0, summary=MineSummary())
    assert ex.peak == 3 and len(got) == 500


def test_work_is_listed_in_chunks_with_the_same_result(db):
    scorers = [get_scorer("contrast"), get_scorer("flaky")]
    with Store(db) as store:
        mine(store, [get_scorer("flaky")], backend="inline", save_maps=False)  # flaky fails image 11 (id)
        mine(store, [get_scorer("contrast")], backend="inline", save_maps=False)
        store.con.execute("DELETE FROM scores WHERE scorer = 'contrast' AND image_id % 7 = 0")
        whole = pending_work(store, scorers)
        counts: Counter = Counter()
        chunked = list(iter_pending_work(store, scorers, chunk=5, counts=counts))
        n = count_pending(store, scorers)
    assert chunked == whole and n == len(whole) == len([i for i in range(1, N_IMAGES + 1) if i % 7 == 0])
    assert counts["skipped"] + counts["skipped_failed"] == N_IMAGES - n
    assert all(it["scorers"] == ["contrast"] for it in chunked)


# -- failures ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend,name", [("inline", "flaky"), ("process", "flaky"), ("process", "flaky_batch")])
def test_scorer_raising_on_one_image_is_recorded_and_the_job_finishes(db, backend, name):
    with Store(db) as store:
        s = mine(store, [get_scorer(name)], backend=backend, workers=2, shard_size=8, save_maps=False)
        rows = store.query(
            "SELECT f.scorer, f.reason, f.detail, i.path FROM failures f JOIN images i ON i.id = f.image_id"
        )
        again = mine(store, [get_scorer(name)], backend=backend, save_maps=False)
        run = store.query("SELECT counts FROM runs WHERE id = ?", (s.run_id,))[0][0]
    assert s.done == N_IMAGES - 1 and s.failed == Counter(scorer_error=1)
    assert [(r[0], r[1], os.path.basename(r[3])) for r in rows] == [(name, "scorer_error", "img_010.png")]
    assert "ValueError: constant image, nothing to score" in rows[0][2]
    assert json.loads(run)["failed"] == {"scorer_error": 1}
    assert again.done == 0 and again.skipped == N_IMAGES - 1 and again.skipped_failed == 1


def test_worker_scores_in_batches_and_a_failed_batch_image_by_image(db, indexed, tmp_path):
    scorer = get_scorer("flaky_batch")
    with Store(db) as store:
        items = pending_work(store, [scorer])
    results = score_shard(items[:40], _worker_state([scorer], None, 10**8))
    # 40 images: batches of BATCH_IMAGES (32) and 8; the first holds the constant image 10, so its
    # batch raised and was redone one by one (score_image): only image 10 failed.
    assert scorer._batches == [32, 8] and BATCH_IMAGES == 32
    failed = [os.path.basename(it["path"]) for it, r in zip(items[:40], results, strict=True) if r["failures"]]
    assert failed == ["img_010.png"] and [r["image_id"] for r in results] == [it["image_id"] for it in items[:40]]
    assert "constant image, nothing to score" in results[10]["failures"][0]["detail"]
    ref = reference_scores(indexed, tmp_path)
    got = {r["image_id"]: r["scores"][0]["score"] for r in results if r["scores"]}
    assert len(got) == 39 and all(got[i] == pytest.approx(ref[i]) for i in got)


def test_dead_worker_is_replaced_and_its_shard_redone(db, indexed, tmp_path):
    marker = tmp_path / "died-once"
    with Store(db) as store:
        s = mine(
            store,
            [get_scorer("dying", marker=str(marker))],
            backend="process",
            workers=2,
            shard_size=4,
            save_maps=False,
        )
        failures = store.query("SELECT COUNT(*) FROM failures")[0][0]
    assert marker.exists() and s.worker_restarts >= 1
    # image 10 is constant: it kills every worker it meets and is the only failure
    assert s.failed == Counter(worker_died=1) and failures == 1
    assert s.done == N_IMAGES - 1
    ref = reference_scores(indexed, tmp_path)
    got = scores_of(db, "dying")
    assert got == {k: v for k, v in ref.items() if k in got} and len(got) == N_IMAGES - 1


# -- configs ------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mine:\n  workers: 0\n", ["'mine.workers'", "value 0", "allowed: a number >= 1"]),
        ("mine:\n  backend: spark\n", ["'mine.backend'", "'spark'", "'inline', 'process' or 'dask'"]),
        ("mine:\n  wrokers: 2\n", ["'mine.wrokers'", "did you mean 'workers'", "allowed keys: scorers, backend"]),
        ("mine:\n  scorers: [contrast, nosuch]\n", ["'mine.scorers'", "unknown scorer 'nosuch'", "allowed: "]),
        ("mine:\n  scheduler: tcp://h:8786\n", ["'mine.scheduler'", "'tcp://h:8786'", "only with backend 'dask'"]),
        ("mine:\n  scheduler: localhost\n  backend: dask\n", ["'mine.scheduler'", "'localhost'", "matching"]),
        ("mine:\n  save_maps: maybe\n", ["'mine.save_maps'", "'maybe'", "allowed: true or false"]),
        ("mine: 3\n", ["key 'mine'", "value 3", "a mapping with keys scorers, backend"]),
        ("minе:\n  workers: 2\n", ["unknown key", "did you mean 'mine'", "allowed keys: index, mine, "]),
        ("mine: [unclosed\n", ["not valid YAML"]),
    ],
)
def test_bad_config_message_names_key_value_and_allowed(db, tmp_path, text, expected):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text, encoding="utf-8")
    res = invoke("mine", "--db", db, "--config", cfg)
    assert res.exit_code == 2, res.output
    for part in expected:
        assert part in res.output, (part, res.output)
    assert str(cfg) in res.output


def test_set_overrides_any_key_through_the_cli_and_is_stored_with_the_run(db, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        "mine:\n  backend: inline\n  shard_size: 50\n  scorers: [contrast]\nscorers:\n  contrast:\n    border: 4\n"
    )
    res = invoke(
        "mine",
        "--db",
        db,
        "--config",
        cfg,
        "--set",
        "mine.shard_size=7",
        "--set",
        "scorers.contrast.border=2",
        "--set",
        "mine.save_maps=false",
    )
    assert res.exit_code == 0, res.output
    assert f"mined {N_IMAGES} images" in res.output and "failed: none" in res.output
    with Store(db, readonly=True) as ro:
        stored = json.loads(ro.query("SELECT config FROM runs WHERE kind = 'mine'")[0][0])
        counts = json.loads(ro.query("SELECT counts FROM runs WHERE kind = 'mine'")[0][0])
        versions = json.loads(ro.query("SELECT versions FROM runs WHERE kind = 'mine'")[0][0])
    assert stored["mine"]["shard_size"] == 7 and stored["mine"]["backend"] == "inline"
    assert stored["scorers"]["contrast"] == {"border": 2}
    assert counts["shards"] == -(-N_IMAGES // 7) and counts["timings"]["stream_s"] > 0
    assert "numpy" in versions and "python" in versions
    res = invoke("mine", "--db", db, "--set", "mine.shard_size")
    assert res.exit_code == 2 and "section.key=value" in res.output


def test_cli_scheduler_and_dask_local_are_exclusive(db):
    res = invoke("mine", "--db", db, "--scheduler", "tcp://127.0.0.1:1", "--dask-local", "2")
    assert res.exit_code == 2 and "not both" in res.output


def test_default_yaml_documents_every_key_with_its_default():
    path = ROOT / "configs" / "default.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg = load_config(path)
    for section, field in Config.model_fields.items():
        assert section in data, f"section {section!r} is not documented in {path}"
        if section == "scorers":
            continue
        sub = type(getattr(cfg, section))
        assert set(data[section]) == set(sub.model_fields), f"keys of {section!r} differ from {sub.__name__}"
        assert getattr(cfg, section) == field.default_factory(), f"{section!r} in default.yaml is not the default"
    for name, params in data["scorers"].items():
        assert get_scorer(name).config() == params, f"scorers.{name} in default.yaml is not the default"
    for example in (ROOT / "configs").glob("*.yaml"):
        if example.name.startswith(("default", "nightly", "local")):
            load_config(example)
