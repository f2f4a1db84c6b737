"""The review app through streamlit.testing.v1.AppTest: every view and action."""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from mining import review as rv
from mining.catalogue.store import SCHEMA_VERSION, Store
from mining.ranking.rank import rank, round_target
from tests.review_catalogue import build_catalogue, clone_catalogue

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_catalogue(tmp_path_factory.mktemp("review_template"), n=6, sixteen_bit=(1,))


@pytest.fixture
def cat(template, tmp_path, monkeypatch):
    c = clone_catalogue(template, tmp_path / "cat")
    monkeypatch.setenv("RAREMINE_DB", c["db"])
    monkeypatch.delenv("RAREMINE_CONFIG", raising=False)
    return c


def rule_config(tmp_path, monkeypatch, **review) -> None:
    """Point the app at a config with a ``review:`` section."""
    path = tmp_path / f"review_{len(review)}_{'_'.join(map(str, review.values()))}.yaml"
    path.write_text("review:\n" + "".join(f"  {k}: {v}\n" for k, v in review.items()))
    monkeypatch.setenv("RAREMINE_CONFIG", str(path))


def session(reviewer: str | None = "alice") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    if reviewer:
        at.query_params["reviewer"] = reviewer  # as ?reviewer=NAME in the address
    at.run()
    assert not at.exception, at.exception
    return at


def header(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "· item " in m.value)


def votes(db: str) -> list[tuple]:
    with Store(db, readonly=True) as s:
        return [tuple(r) for r in s.query("SELECT image_id, reviewer, verdict, category FROM reviews ORDER BY id")]


def viewer(at: AppTest) -> dict | None:
    """The data the zoomable viewer component was sent (None when no candidate is shown)."""
    import json

    for e in at.get("bidi_component"):
        if e.key == "viewer":
            return json.loads(e.proto.json)
    return None


def image_captions(at: AppTest) -> list[str]:
    """Captions of the images drawn with st.image."""
    return [c for e in at.get("image") for c in e.captions]


def view(at: AppTest, name: str) -> AppTest:
    at.sidebar.radio(key="view").set_value(name).run()
    assert not at.exception, at.exception
    return at


def test_asks_for_a_reviewer_name_once_then_shows_it(cat):
    at = session(None)
    assert any("reviewer" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key and b.key.startswith("btn_")]
    at.sidebar.text_input(key="reviewer_name").input("alice").run()
    assert "reviewer **alice**" in header(at)
    # set once: no text field is left to type into by accident (a "Y" cannot make "alicey")
    assert not [t for t in at.sidebar.text_input if t.key == "reviewer_name"]
    assert any("Reviewer: **alice**" in m.value for m in at.sidebar.markdown)
    assert at.query_params["reviewer"] in ("alice", ["alice"])
    at.sidebar.button(key="change_reviewer").click().run()
    at.sidebar.text_input(key="reviewer_name").input("bob").run()
    assert "reviewer **bob**" in header(at)


def test_a_verdict_is_written_and_the_queue_moves_on(cat):
    at = session()
    first = rv.round_items(Store(cat["db"], readonly=True))
    assert "item 1 of 6" in header(at) and os.path.basename(first[0].path) in header(at)
    at.text_input(key="note").input("bright spot").run()
    at.button(key="btn_confirm").click().run()
    assert "item 2 of 6" in header(at)
    with Store(cat["db"], readonly=True) as s:
        row = s.query("SELECT image_id, reviewer, verdict, category, note, candidate_id FROM reviews")[0]
    assert tuple(row) == (first[0].image_id, "alice", "confirm", "defect", "bright spot", first[0].candidate_id)
    at.button(key="btn_reject").click().run()
    at.button(key="btn_unsure").click().run()
    assert [v[2] for v in votes(cat["db"])] == ["confirm", "reject", "unsure"]
    assert [v[3] for v in votes(cat["db"])] == ["defect", None, None]  # a category only goes with a confirm


def test_undo_removes_the_vote_and_goes_back(cat):
    at = session()
    at.button(key="btn_confirm").click().run()
    at.button(key="btn_reject").click().run()
    assert len(votes(cat["db"])) == 2 and "item 3 of 6" in header(at)
    at.button(key="btn_undo").click().run()
    assert [v[2] for v in votes(cat["db"])] == ["confirm"] and "item 2 of 6" in header(at)
    at.button(key="btn_undo").click().run()
    assert votes(cat["db"]) == [] and "item 1 of 6" in header(at)


def test_next_previous_and_a_stale_key_press(cat):
    at = session()
    at.button(key="btn_next").click().run()
    assert "item 2 of 6" in header(at)
    at.button(key="btn_prev").click().run()
    assert "item 1 of 6" in header(at)
    # a verdict for an item that is no longer shown (key pressed twice) is ignored
    from raremine.screens.state import act_verdict  # noqa: F401  (the module imports without running the page)

    stale = at.session_state["queue"][0]
    at.session_state["pos"] = 1
    at.run()
    at.button(key="btn_confirm").click().run()
    assert [v[0] for v in votes(cat["db"])] == [at.session_state["queue"][1].image_id]
    assert stale.image_id not in [v[0] for v in votes(cat["db"])]


def test_consensus_with_two_reviewers(cat, tmp_path, monkeypatch):
    rule_config(tmp_path, monkeypatch, agree=2)
    alice = session("alice")
    first = alice.session_state["queue"][0]
    alice.button(key="btn_confirm").click().run()
    bob = session("bob")
    assert bob.session_state["queue"][0] == first  # two votes needed: bob still sees it
    bob.button(key="btn_confirm").click().run()
    carol = session("carol")
    assert first not in carol.session_state["queue"]  # decided
    with Store(cat["db"], readonly=True) as s:
        d = rv.decisions(s, rv.ConsensusRule(agree=2))[first.key]
    assert (d.status, d.verdict) == ("decided", "confirm")


def test_consensus_with_three_reviewers_and_the_disagreements_view(cat, tmp_path, monkeypatch):
    rule_config(tmp_path, monkeypatch, agree=2, on_disagreement="third_vote")
    alice = session("alice")
    first = alice.session_state["queue"][0]
    alice.button(key="btn_confirm").click().run()
    bob = session("bob")
    bob.button(key="btn_reject").click().run()
    view(bob, "Disagreements")
    table = bob.dataframe[0].value
    assert list(table["image_id"]) == [first.image_id] and list(table["status"]) == ["disagreement"]
    carol = session("carol")
    assert carol.session_state["queue"][0] == first
    view(carol, "Disagreements")
    carol.button(key="queue_disagree").click().run()
    assert carol.session_state["view"] == "Queue" and "disagreements" in header(carol)
    carol.button(key="btn_confirm").click().run()
    view(carol, "Export")
    carol.button(key="export_write").click().run()
    out = os.path.splitext(cat["db"])[0] + ".labels.csv"
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [(r["path"], r["label"], r["votes"]) for r in rows] == [
        (first.path, "1", "alice:confirm:defect;bob:reject;carol:confirm:defect")
    ]


def test_empty_queue(tmp_path, monkeypatch):
    db = tmp_path / "empty.db"
    Store(db).close()
    monkeypatch.setenv("RAREMINE_DB", str(db))
    at = session()
    assert any("raremine rank" in i.value for i in at.info)


def test_end_of_queue_after_everything_is_reviewed(cat):
    at = session()
    for _ in range(6):
        at.button(key="btn_reject").click().run()
    assert any("End of the queue" in s.value for s in at.success)
    at.button(key="btn_undo_end").click().run()
    assert "item 6 of 6" in header(at) and len(votes(cat["db"])) == 5


def test_missing_image_shows_a_message_and_the_queue_moves_on(cat):
    with Store(cat["db"], readonly=True) as s:
        items = rv.round_items(s)
    os.unlink(items[0].path)
    at = session()
    assert any(
        "skipped" in w.value and os.path.basename(items[0].path) in w.value and "missing" in w.value for w in at.warning
    )
    assert os.path.basename(items[1].path) in header(at)
    assert viewer(at)["img"].startswith("data:image/png;base64,")


def test_a_file_outside_the_archive_roots_is_never_shown(cat):
    con = sqlite3.connect(cat["db"])
    with Store(cat["db"], readonly=True) as s:
        first = rv.round_items(s)[0]
    con.execute("UPDATE images SET path = '/etc/hostname' WHERE id = ?", (first.image_id,))
    con.commit()
    con.close()
    at = session()
    assert any("outside the catalogue's archive roots" in w.value for w in at.warning)
    assert "hostname" not in header(at)


def test_unknown_schema_version_is_refused(cat, monkeypatch):
    con = sqlite3.connect(cat["db"])
    con.execute("PRAGMA user_version = 99")
    con.close()
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert at.error and "99" in at.error[0].value and f"expects {SCHEMA_VERSION}" in at.error[0].value


def test_missing_catalogue_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RAREMINE_DB", str(tmp_path / "nope.db"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert at.error and "does not exist" in at.error[0].value


def test_grid_records_only_the_verdicts_chosen_and_shows_earlier_votes(cat):
    at = view(session(), "Grid")
    queue = at.session_state["queue"]
    assert len(at.get("image")) == len(queue) == 6
    assert not [r for r in at.radio if r.key == "grid_default"]  # no default verdict for unmarked thumbnails
    at.segmented_control(key=f"grid_{queue[1].image_id}_-1").set_value("confirm").run()
    at.segmented_control(key=f"grid_{queue[3].image_id}_-1").set_value("unsure").run()
    at.button(key="grid_submit").click().run()
    got = {v[0]: v[2] for v in votes(cat["db"])}
    assert got == {queue[1].image_id: "confirm", queue[3].image_id: "unsure"}  # unmarked = skipped
    at.button(key="btn_undo_end").click().run()
    assert votes(cat["db"]) == []
    # with "show items I already voted on", an earlier confirm is shown and kept by a submit that leaves it alone
    with Store(cat["db"]) as s:
        rv.record_verdict(s, queue[0], "alice", "confirm", category="defect")
    at.session_state["show_all"] = True
    at.session_state["queue"] = None
    at.run()
    assert any("earlier: alice confirm" in c.value for c in at.caption)
    at.button(key="grid_submit").click().run()
    assert [v[2] for v in votes(cat["db"])] == ["confirm"]


def test_map_view_and_a_selection_queue(cat):
    at = view(session(), "Map")
    assert at.get("plotly_chart")
    from raremine.screens import map as screen

    ids = screen.selected_ids(
        {"selection": {"points": [{"customdata": [3]}, {"customdata": [5]}, {"customdata": [3]}]}}
    )
    assert ids == [3, 5]
    assert screen.selected_ids(None) == []
    at.session_state["source"] = ("images", ("map selection (2)", (3, 5)))
    view(at, "Queue")
    assert "map selection (2)" in header(at) and "item 1 of 2" in header(at)


def test_progress_view_counts_and_learn(cat):
    at = session()
    at.button(key="btn_confirm").click().run()
    at.button(key="btn_reject").click().run()
    view(at, "Progress")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images reviewed"] == "2" and metrics["Confirmed"] == "1" and metrics["Votes"] == "2"
    assert at.get("plotly_chart")
    assert at.button(key="learn") and not at.button(key="learn").disabled
    assert at.button(key="rank_next") and not at.button(key="rank_next").disabled


def test_learn_reports_when_not_built(cat, monkeypatch):
    import importlib.machinery
    import sys
    import types

    from raremine.screens import loop

    stub = types.ModuleType("mining.learning.learn")  # a module without learn()
    stub.__spec__ = importlib.machinery.ModuleSpec("mining.learning.learn", None)
    monkeypatch.setitem(sys.modules, "mining.learning.learn", stub)
    assert loop.learn_function() is None
    at = view(session(), "Progress")
    assert any("not available yet" in i.value for i in at.info)
    assert at.button(key="learn").disabled and not at.button(key="rank_next").disabled


def test_sixteen_bit_window_sliders(cat):
    at = session()
    at.session_state["show_all"] = True
    at.run()
    with Store(cat["db"], readonly=True) as s:
        order = [it.path for it in rv.round_items(s)]
    at.session_state["pos"] = order.index(cat["paths"][1])
    at.run()
    auto = viewer(at)["img"]
    at.checkbox(key="manual_window").check().run()
    assert at.slider(key="level").max == 65535.0
    assert viewer(at)["img"] == auto  # the sliders start at the automatic window
    at.slider(key="width").set_value(1000.0).run()
    assert not at.exception
    assert viewer(at)["img"] != auto  # the viewer shows the narrower window


def test_learn_job_runs_in_the_background_with_progress(cat):
    from raremine.screens import loop

    seen = {}

    def fake_learn(store, *, progress=None):
        seen["images"] = len(store.images())
        progress("rerank", 1, 2)
        progress("rerank", 2, 2)
        return "2 models"

    job = loop.LearnJob(started=0.0)
    loop._run_learn(job, fake_learn, cat["db"], None)
    assert (job.done, job.total, job.message, job.result, job.error) == (2, 2, "rerank", "2 models", None)
    assert seen["images"] == 6 and job.finished is not None

    def broken(store):
        raise ValueError("no verdicts yet")

    job = loop.LearnJob(started=0.0)
    loop._run_learn(job, broken, cat["db"], None)
    assert job.error == "ValueError: no verdicts yet"


def test_cli_review_refuses_bad_input(cat, tmp_path):
    from typer.testing import CliRunner

    from raremine.cli import app as cli

    runner = CliRunner()
    res = runner.invoke(cli, ["review", "--db", str(tmp_path / "none.db")])
    assert res.exit_code == 2 and "does not exist" in res.output
    con = sqlite3.connect(cat["db"])
    con.execute("PRAGMA user_version = 7")
    con.close()
    res = runner.invoke(cli, ["review", "--db", cat["db"]])
    assert res.exit_code == 2 and "schema version 7" in res.output and f"expects {SCHEMA_VERSION}" in res.output
    con = sqlite3.connect(cat["db"])
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    con.close()
    res = runner.invoke(cli, ["review", "--db", cat["db"], "--port", "0"])
    assert res.exit_code == 2 and "--port" in res.output


def test_export_writes_only_beside_the_catalogue(cat):
    at = session()
    at.button(key="btn_confirm").click().run()
    view(at, "Export")
    assert at.get("download_button")
    at.text_input(key="export_path").input("../escape.csv").run()
    at.button(key="export_write").click().run()
    assert at.error and "plain .csv file name" in at.error[0].value
    assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(cat["db"])), "escape.csv"))
    at.text_input(key="export_path").input("round1.csv").run()
    at.button(key="export_write").click().run()
    rows = list(csv.DictReader(open(os.path.join(os.path.dirname(cat["db"]), "round1.csv"), encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["label"] == "1" and rows[0]["votes"] == "alice:confirm:defect"


# -- several reviewers ------------------------------------------------------------------------------
def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_an_image_another_reviewer_is_looking_at_is_not_served(cat):
    alice = session("alice")
    first = alice.session_state["queue"][0]
    assert first.path.endswith(header(alice).rsplit("`", 2)[-2])
    bob = session("bob")
    assert os.path.basename(first.path) not in header(bob)  # alice's claim: bob gets the next one
    assert "alice is looking at it" in _captions(bob)
    assert bob.session_state["queue"][-1] == first  # moved to the end of bob's queue, not lost
    with Store(cat["db"], readonly=True) as s:
        assert [who for who, _ in rv.claims(s)[first.key]] == ["alice"]
    alice.button(key="btn_reject").click().run()  # a vote releases the claim; agree=1 decides
    with Store(cat["db"], readonly=True) as s:
        assert first.key not in rv.claims(s)


def test_an_image_decided_meanwhile_is_passed_over_and_refresh_says_so(cat):
    bob = session("bob")
    queue = list(bob.session_state["queue"])
    alice = session("alice")  # bob looks at queue[0]; alice gets queue[1] and decides it
    assert os.path.basename(queue[1].path) in header(alice)
    alice.button(key="btn_confirm").click().run()
    bob.button(key="btn_reject").click().run()  # bob's next would be queue[1]: decided meanwhile
    # queue[1] is decided (passed over), alice now looks at queue[2] (moved to the end): bob gets queue[3]
    assert os.path.basename(queue[3].path) in header(bob)
    assert "decided confirm (alice: confirm)" in _captions(bob) and "alice is looking at it" in _captions(bob)
    bob.button(key="refresh_queue").click().run()
    report = "\n".join(i.value for i in bob.info)
    assert "other reviewers voted on 1 of its images" in report and os.path.basename(queue[1].path) in report
    assert queue[1] not in bob.session_state["queue"] and queue[0] not in bob.session_state["queue"]
    assert [v[2] for v in votes(cat["db"])] == ["confirm", "reject"]


def test_consensus_that_needs_another_vote_serves_the_image_again(cat, tmp_path, monkeypatch):
    rule_config(tmp_path, monkeypatch, agree=2)
    alice = session("alice")
    first = alice.session_state["queue"][0]
    dan = session("dan")
    assert os.path.basename(first.path) in header(dan)  # two votes needed: served to two reviewers at once
    dan.button(key="btn_next").click().run()  # dan moves on without a vote: his claim goes
    alice.button(key="btn_confirm").click().run()  # pending: one more vote needed
    bob = session("bob")
    assert os.path.basename(first.path) in header(bob)
    assert any("votes so far: alice: confirm" in c.value for c in bob.caption)


# -- what the screen shows ----------------------------------------------------------------------------
def test_why_in_sentences_and_neighbours_with_real_distances(cat):
    at = session()
    text = "\n".join(m.value for m in at.markdown)
    assert "picked by top; rank 1 of the round" in text
    assert "contrast: score " in text and "top 17 % (1st highest of 6)" in text
    at.toggle(key="show_neighbours").set_value(True).run()
    dists = [c.rsplit("(d = ", 1)[-1].rstrip(")") for c in image_captions(at) if "(d = " in c]
    assert len(dists) >= 3 and len(set(dists)) >= 2  # real distances, not all "(1.00)"
    with Store(cat["db"], readonly=True) as s:
        _, ids, vecs = rv.raw_embeddings(s)
    want = rv.nearest(ids, vecs, at.session_state["queue"][0].image_id, k=6)
    assert sorted(dists, key=float) == [f"{d:.3g}" for _, d in want]  # Euclidean, nearest first in the library
    at.toggle(key="show_reference").set_value(True).run()
    assert any(c.startswith("reference: ") and "nearest normal-looking" in c for c in image_captions(at))


def test_the_viewer_gets_a_view_sized_8_bit_rendering_and_the_hot_region(cat):
    import base64

    at = session()
    at.session_state["show_all"] = True
    at.run()
    for _ in range(6):
        item = at.session_state["queue"][at.session_state["pos"]]
        d = viewer(at)
        png = np.frombuffer(base64.b64decode(d["img"].split(",", 1)[1]), np.uint8)
        shown = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
        assert shown.dtype == np.uint8 and shown.shape[:2] == (d["h"], d["w"]) == (96, 96)  # 16-bit too
        assert d["contours"] and d["spots"][0]["crop"].startswith("data:image/png")  # lossless crops
        assert d["peak"] == d["spots"][0]["peak"]
        if item.path in cat["blobs"]:  # the outline surrounds the blob, the peak is on it
            bx, by = cat["blobs"][item.path]
            assert abs(d["peak"][0] - bx) <= 8 and abs(d["peak"][1] - by) <= 8
            xy = np.array([p for c in d["contours"] for p in c])
            assert xy[:, 0].min() <= bx <= xy[:, 0].max() and np.ptp(xy[:, 0]) < 48
        at.button(key="btn_next").click().run()


def test_overlay_opacity_is_remembered_per_reviewer(cat):
    at = session("alice")
    assert at.slider(key="opacity").value == 0.0  # outline only by default, no tint
    at.slider(key="opacity").set_value(0.4).run()
    assert viewer(at)["opacity"] == pytest.approx(0.4)
    assert session("alice").slider(key="opacity").value == pytest.approx(0.4)
    assert session("bob").slider(key="opacity").value == 0.0


def test_rank_the_next_round_from_the_app(cat):
    from raremine.screens import loop

    at = session()
    for _ in range(6):
        at.button(key="btn_reject").click().run()
    assert at.button(key="rank_next") and not at.button(key="rank_next").disabled  # offered at the end
    with Store(cat["db"]) as s, s.transaction() as con:  # three of them not reviewed after all
        con.execute("DELETE FROM reviews WHERE id IN (SELECT id FROM reviews ORDER BY id DESC LIMIT 3)")
    job = loop.LearnJob(started=0.0, kind="rank")
    loop._run_learn(job, loop.rank_round, cat["db"], None)  # what the button runs in its thread
    # the defaults (rank.step 6 of rank.n 24): the first step, of the 3 images nobody reviewed
    assert job.error is None and job.result == "round 2: 3 candidates, the first step of 24 (6 at a time)"
    with Store(cat["db"], readonly=True) as s:
        assert round_target(s, 2) == 24
    at = session("carol")
    assert "**round 2** · item 1 of 3" in header(at)


def test_ranking_from_the_app_first_retrains_the_reranker_on_the_verdicts(cat):
    # as `raremine simulate` does at the end of every round, so the next round can follow it
    from mining.ranking.rerank import RERANK_SCORER
    from raremine.screens import loop

    with Store(cat["db"]) as s:
        ids = [r["id"] for r in s.images()]
        assert len(ids) >= 6
        for k, iid in enumerate(ids[:6]):
            s.add_review(iid, "t", "confirm" if k < 2 else "reject", source="test")
        assert not s.scored_ids(RERANK_SCORER)
    job = loop.LearnJob(started=0.0, kind="rank")
    loop._run_learn(job, loop.rank_round, cat["db"], None)
    assert job.error is None and job.result.startswith("round 2: "), job.result
    with Store(cat["db"], readonly=True) as s:
        assert len(s.scored_ids(RERANK_SCORER)) == len(ids)  # every image scored by the new re-ranker
        assert not {c["image_id"] for c in s.candidates(2)} & set(ids[:6])  # and none reviewed offered again


def test_a_failed_retraining_does_not_stop_the_next_round(cat, monkeypatch):
    from raremine.screens import loop

    with Store(cat["db"]) as s:
        s.add_review(s.images()[0]["id"], "t", "reject", source="test")

    def broken(store, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loop, "learn_function", lambda: broken)
    job = loop.LearnJob(started=0.0, kind="rank")
    loop._run_learn(job, loop.rank_round, cat["db"], None)
    assert job.error is None and job.result.startswith("round 2: ")
    assert job.result.endswith("(the re-ranker was not retrained: RuntimeError: disk full)")


def test_the_viewer_shows_the_files_own_window_and_the_manual_one(cat):
    import base64

    from mining.io import read_image

    path = cat["paths"][1]  # 16-bit
    with Store(cat["db"]) as s, s.transaction() as con:  # as indexing a DICOM with WindowCenter/Width stores it
        con.executemany(
            "INSERT INTO image_meta (image_id, key, value) VALUES (?, ?, ?)",
            [(cat["ids"][path], "window_center", "30000"), (cat["ids"][path], "window_width", "8000")],
        )
    at = session()
    at.session_state["show_all"] = True
    at.run()
    at.session_state["pos"] = [it.path for it in at.session_state["queue"]].index(path)
    at.run()

    def shown():
        d = viewer(at)
        return cv2.imdecode(np.frombuffer(base64.b64decode(d["img"].split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)

    raw = read_image(path)
    np.testing.assert_array_equal(shown(), rv.display_image(raw, 30000, 8000))
    at.checkbox(key="manual_window").check().run()
    at.slider(key="width").set_value(2000.0).run()
    np.testing.assert_array_equal(shown(), rv.display_image(raw, 30000, 2000))


# -- a round chosen step by step (rank.step) --------------------------------------------------------
@pytest.fixture(scope="module")
def step_template(tmp_path_factory):
    return build_catalogue(tmp_path_factory.mktemp("step_template"), n=16, n_candidates=1, with_map=False)


@pytest.fixture
def stepcat(step_template, tmp_path, monkeypatch):
    """16 images, round 1 of one candidate; the app ranks 9 a round, 3 at a time (learn with 3 folds)."""
    c = clone_catalogue(step_template, tmp_path / "cat")
    monkeypatch.setenv("RAREMINE_DB", c["db"])
    step_config(tmp_path, monkeypatch)
    return c


def step_config(tmp_path, monkeypatch, *, n: int = 9, step: int = 3, **review) -> str:
    """Point the app at a config that chooses a round of ``n`` candidates ``step`` at a time."""
    path = tmp_path / f"step_{n}_{step}_{len(review)}.yaml"
    text = f"rank:\n  n: {n}\n  step: {step}\nlearn:\n  n_folds: 3\n"
    text += ("review:\n" + "".join(f"  {k}: {v}\n" for k, v in review.items())) if review else ""
    path.write_text(text)
    monkeypatch.setenv("RAREMINE_CONFIG", str(path))
    return str(path)


def first_step(db: str, n: int = 3, target: int = 9) -> int:
    """Write the first step of a new round, as the app's "Rank the next round" does."""
    with Store(db) as s:
        return rank(s, n=n, target=target, random_state=0)


def step_job(db: str):
    from raremine.screens import loop

    return loop.learn_jobs().get((db, "step"))


def finish_jobs(db: str) -> None:
    """Wait for this catalogue's background jobs (they take well under a second here)."""
    from raremine.screens import loop

    for (where, _), job in list(loop.learn_jobs().items()):
        if where == db and job.thread is not None:
            job.thread.join(30)
            assert job.finished is not None


def held(db: str, round_: int) -> list[int]:
    with Store(db, readonly=True) as s:
        return [int(c["image_id"]) for c in s.candidates(round_)]


@pytest.fixture
def gated_step(monkeypatch):
    """Step jobs wait for ``gate.set()`` before they run (to look at the page while one runs)."""
    import threading

    from raremine.screens import loop

    gate = threading.Event()
    real = loop.step_round

    def gated(store, *, config=None, progress=None):
        assert gate.wait(30)
        return real(store, config=config, progress=progress)

    monkeypatch.setattr(loop, "step_round", gated)
    yield gate
    gate.set()


def test_a_round_ranked_from_the_app_grows_step_by_step_and_undo_still_works(stepcat):
    db = stepcat["db"]
    at = view(session(), "Progress")
    at.button(key="rank_next").click().run()
    finish_jobs(db)
    at.run()  # the rank job's end draws the page again
    assert held(db, 2) and len(held(db, 2)) == 3
    with Store(db, readonly=True) as s:
        assert round_target(s, 2) == 9
    view(at, "Queue")
    assert "**round 2** · item 1 of 3" in header(at)
    first = list(at.session_state["queue"])
    at.button(key="btn_reject").click().run()
    assert step_job(db) is None  # 2 left: more than the lookahead (1 for steps of 3)
    at.button(key="btn_confirm").click().run()  # 1 left: the next step is chosen in the background
    job = step_job(db)
    assert job is not None and job.sig == (2, 3)
    finish_jobs(db)
    assert job.error is None and job.result == "round 2: 3 more candidates (6 of 9)"
    at.run()
    assert "**round 2** · item 3 of 6" in header(at)  # the same position, three more behind it
    queue = at.session_state["queue"]
    assert queue[:3] == first and [it.image_id for it in queue[3:]] == held(db, 2)[3:]
    assert [it.rank for it in queue] == [1, 2, 3, 4, 5, 6]
    assert not {it.image_id for it in queue[3:]} & {v[0] for v in votes(db)}
    at.button(key="btn_reject").click().run()
    assert "item 4 of 6" in header(at) and len(at.session_state["undo"]) == 3
    at.button(key="btn_undo").click().run()  # the undo stack survived the extension: the last vote goes
    assert "item 3 of 6" in header(at)
    assert [v[0] for v in votes(db)] == [first[0].image_id, first[1].image_id]
    assert len(held(db, 2)) == 6 and step_job(db) is job  # no other step job meanwhile


def test_the_end_of_the_queue_waits_for_the_next_step(stepcat, gated_step):
    db = stepcat["db"]
    first_step(db)
    at = session()
    for _ in range(3):
        at.button(key="btn_reject").click().run()
    # the queue is done but the round is not: the next candidates are on their way, no "round done"
    assert any("being chosen from your verdicts" in i.value for i in at.info)
    assert not any("End of the queue" in s.value for s in at.success)
    assert at.button(key="rank_next").disabled and at.session_state["jobs_drawn_busy"]
    gated_step.set()
    finish_jobs(db)
    at.run()
    assert "**round 2** · item 4 of 6" in header(at) and len(at.session_state["undo"]) == 3
    # what the jobs panel (a fragment, every second) does when it sees the step end: the queue stays
    from raremine.screens import loop

    ss = {"source": ("round", None), "queue": list(at.session_state["queue"]), "queue_round": 2}
    with Store(db, readonly=True) as s:
        loop.jobs_ended(ss, s)
        assert len(ss["queue"]) == 6 and not ss["jobs_drawn_busy"]
        first_step(db)  # a new round (ranked by anyone): the queue is built again
        loop.jobs_ended(ss, s)
    assert ss["queue"] is None


def test_a_round_written_whole_is_never_extended(cat, tmp_path, monkeypatch):
    from raremine.screens import loop

    step_config(tmp_path, monkeypatch)
    at = session()
    for _ in range(6):
        at.button(key="btn_reject").click().run()
    assert any("End of the queue" in s.value for s in at.success)
    assert step_job(cat["db"]) is None and len(held(cat["db"], 1)) == 6
    # rank.step 0: the app writes the round whole as well
    from mining.config import load_config

    cfg = load_config(step_config(tmp_path, monkeypatch, n=4, step=0))
    with Store(cat["db"]) as s:
        assert loop.rank_round(s, config=cfg).startswith("round 2: ") and round_target(s, 2) == len(s.candidates(2))


def test_a_map_selection_never_starts_a_step(stepcat):
    db = stepcat["db"]
    first_step(db)
    ids = held(db, 2)[:2]
    at = session()
    at.session_state["source"] = ("images", ("map selection (2)", tuple(ids)))
    at.session_state["queue"] = None
    at.run()
    assert "item 1 of 2" in header(at)
    at.button(key="btn_reject").click().run()
    at.button(key="btn_reject").click().run()
    assert step_job(db) is None and len(held(db, 2)) == 3


def test_two_reviewers_one_step_job_and_both_queues_grow_in_place(stepcat, tmp_path, monkeypatch, gated_step):
    db = stepcat["db"]
    step_config(tmp_path, monkeypatch, agree=2)  # both vote on every candidate
    first_step(db)
    alice, bob = session("alice"), session("bob")
    bob.button(key="btn_confirm").click().run()
    for _ in range(2):
        alice.button(key="btn_reject").click().run()
    job = step_job(db)
    assert job is not None and job.finished is None
    bob.button(key="btn_reject").click().run()  # bob is low too: no second job while alice's runs
    assert step_job(db) is job
    gated_step.set()
    finish_jobs(db)
    alice.run()
    bob.run()
    assert len(held(db, 2)) == len(set(held(db, 2))) == 6
    for at in (alice, bob):
        assert "**round 2** · item 3 of 6" in header(at) and len(at.session_state["undo"]) == 2
        assert [it.image_id for it in at.session_state["queue"]] == held(db, 2)
    with Store(db, readonly=True) as s:
        looking = rv.claims(s)[bob.session_state["queue"][2].key]
    assert sorted(who for who, _ in looking) == ["alice", "bob"]  # claims kept (shared: two votes needed)


def test_a_failed_step_shows_its_error_and_voting_goes_on(stepcat, monkeypatch):
    from raremine.screens import loop

    db = stepcat["db"]
    first_step(db)

    real = loop.step_round

    def broken(store, *, config=None, progress=None):
        raise ValueError("no model")

    monkeypatch.setattr(loop, "step_round", broken)
    at = session()
    at.button(key="btn_reject").click().run()
    at.button(key="btn_reject").click().run()
    finish_jobs(db)
    at.run()
    assert any("failed: ValueError: no model" in w.value for w in at.warning)
    at.button(key="btn_reject").click().run()  # voting goes on
    assert len(votes(db)) == 3 and any("step failed: ValueError: no model" in e.value for e in at.error)
    failed = step_job(db)
    at.run()
    assert step_job(db) is failed  # not started again by itself
    monkeypatch.setattr(loop, "step_round", real)
    at.button(key="retry_step").click().run()
    finish_jobs(db)
    at.run()
    assert "**round 2** · item 4 of 6" in header(at)


def test_grid_pages_count_as_verdicts_for_the_next_step(stepcat):
    db = stepcat["db"]
    first_step(db)
    at = view(session(), "Grid")
    queue = list(at.session_state["queue"])
    assert len(queue) == 3
    for it in queue:
        at.segmented_control(key=f"grid_{it.image_id}_-1").set_value("reject").run()
    at.button(key="grid_submit").click().run()
    finish_jobs(db)
    at.run()
    assert len(at.session_state["queue"]) == 6 and at.session_state["pos"] == 3
    assert [c for c in image_captions(at) if c.startswith("#4 ")]  # the next step's page
    at.button(key="btn_undo_grid").click().run()  # undo takes the whole first page back
    assert votes(db) == [] and at.session_state["pos"] == 0


def test_the_next_step_waits_for_a_learn_job_then_starts(stepcat):
    import time

    from raremine.screens import loop

    db = stepcat["db"]
    first_step(db)
    learning = loop.learn_jobs()[(db, "learn")] = loop.LearnJob(started=time.time(), kind="learn")  # running
    at = session()
    for _ in range(3):
        at.button(key="btn_reject").click().run()
    assert any("chosen when the job below ends" in i.value for i in at.info) and step_job(db) is None
    learning.finished = time.time()
    at.run()  # (the jobs panel's rerun when it sees the learn job end)
    assert step_job(db) is not None
    finish_jobs(db)
    at.run()
    assert "**round 2** · item 4 of 6" in header(at)
