"""The command line through typer's runner."""

import csv
import json

import pytest
from typer.testing import CliRunner

from raremine.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def mined_db(tiny_archive, tmp_path_factory):
    db = tmp_path_factory.mktemp("cli") / "c.db"
    res = invoke("index", tiny_archive["root"], "--db", db)
    assert res.exit_code == 0, res.output
    assert "40 new" in res.output
    res = invoke("mine", "--db", db, "--scorers", "contrast", "--backend", "inline")
    assert res.exit_code == 0, res.output
    return db


def test_status_json(mined_db):
    res = invoke("status", "--db", mined_db, "--json")
    assert res.exit_code == 0
    st = json.loads(res.output)
    assert st["images_ok"] == 40 and st["images_unreadable"] == 0
    assert st["unreadable_reasons"] == {}
    assert st["scores_by_scorer"] == {"contrast": 40}
    assert {"runs", "scores", "reviews"} <= set(st)


def test_status_text(mined_db):
    res = invoke("status", "--db", mined_db)
    assert res.exit_code == 0 and "40 readable" in res.output


def test_export_scores_sorted_with_scorer_columns(mined_db, tmp_path, tiny_archive):
    out = tmp_path / "scores.csv"
    res = invoke("export", "--db", mined_db, "--what", "scores", "--out", out)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "score", "contrast"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(rows) == 40
    assert {rows[0]["path"], rows[1]["path"]} == {p for p, t in tiny_archive["truth"].items() if t}


def test_rank_then_export_candidates(mined_db, tmp_path):
    res = invoke("rank", "--db", mined_db, "--strategy", "top", "--n", "5")
    assert res.exit_code == 0, res.output
    assert "5 candidates" in res.output
    out = tmp_path / "cand.csv"
    assert invoke("export", "--db", mined_db, "--what", "candidates", "--out", out).exit_code == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    assert json.loads(rows[0]["why"])["scorers"]["contrast"] > 0.9


def test_mine_again_skips_scored(mined_db):
    res = invoke("mine", "--db", mined_db, "--scorers", "contrast", "--backend", "inline")
    assert res.exit_code == 0 and "skipped 40" in res.output


def test_bad_usage_exits_2(tmp_path, mined_db):
    res = invoke("status", "--db", tmp_path / "missing.db")
    assert res.exit_code == 2 and "does not exist" in res.output
    res = invoke("mine", "--db", mined_db, "--scorers", "nosuch")
    assert res.exit_code == 2 and "unknown scorer 'nosuch'" in res.output and "contrast" in res.output
    res = invoke("rank", "--db", mined_db, "--strategy", "nosuch")
    assert res.exit_code == 2 and "unknown strategy" in res.output
    res = invoke("export", "--db", mined_db, "--what", "nothing", "--out", tmp_path / "x.csv")
    assert res.exit_code == 2 and "--what must be one of" in res.output
    res = invoke("index", tmp_path / "nope", "--db", tmp_path / "c.db")
    assert res.exit_code == 2 and "does not exist" in res.output


def test_bad_config_names_key_and_value(tmp_path, mined_db):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("mine:\n  workers: many\n  colour: red\n")
    res = invoke("mine", "--db", mined_db, "--config", cfg)
    assert res.exit_code == 2
    assert "mine.workers" in res.output and "'many'" in res.output
    assert "mine.colour" in res.output and "allowed keys" in res.output
    res = invoke("mine", "--db", mined_db, "--set", "mine.shard_size=0")
    assert res.exit_code == 2 and "mine.shard_size" in res.output


def test_bad_files_do_not_change_exit_code(tmp_path):
    root = tmp_path / "arch"
    root.mkdir()
    (root / "broken.png").write_text("nope")
    res = invoke("index", root, "--db", tmp_path / "c.db")
    assert res.exit_code == 0 and "not_an_image 1" in res.output
