"""mining.review on its own: consensus, queues, undo, export, pixels, painting, neighbours."""

from __future__ import annotations

import csv
import json
import os

import cv2
import numpy as np
import pytest

from mining import review as rv
from mining.catalogue.store import Store
from tests.review_catalogue import build_catalogue


@pytest.fixture
def cat(tmp_path):
    c = build_catalogue(tmp_path, n=8)
    with Store(c["db"]) as store:
        c["store"] = store
        yield c


def _v(reviewer, verdict, category=None, rid=1):
    return rv.Vote(rid, reviewer, verdict, category, None, None, 0.0)


# -- consensus ------------------------------------------------------------------------------------
def test_two_agreeing_votes_decide():
    rule = rv.ConsensusRule(agree=2)
    assert rv.decide([], rule).status == "open"
    one = rv.decide([_v("a", "confirm", "crack")], rule)
    assert one.status == "pending" and one.verdict is None
    two = rv.decide([_v("a", "confirm", "crack"), _v("b", "confirm", "crack")], rule)
    assert (two.status, two.verdict, two.category, two.label) == ("decided", "confirm", "crack", "defect")


def test_third_vote_breaks_a_disagreement_by_majority():
    rule = rv.ConsensusRule(agree=2, on_disagreement="third_vote", max_votes=3)
    split = [_v("a", "confirm"), _v("b", "reject")]
    assert rv.decide(split, rule).status == "disagreement"
    assert rv.decide([*split, _v("c", "reject")], rule).verdict == "reject"
    assert rv.decide([*split, _v("c", "confirm")], rule).verdict == "confirm"
    assert rv.decide([*split, _v("c", "unsure")], rule).status == "dropped"


def test_drop_and_neutral_rules():
    split = [_v("a", "confirm"), _v("b", "reject")]
    assert rv.decide(split, rv.ConsensusRule(agree=2, on_disagreement="drop")).status == "dropped"
    d = rv.decide(split, rv.ConsensusRule(agree=2, on_disagreement="neutral"))
    assert (d.status, d.verdict, d.label) == ("decided", "neutral", "neutral")
    # a single reviewer decides alone with agree=1, until someone disagrees
    assert rv.decide([_v("a", "reject")], rv.ConsensusRule()).verdict == "reject"
    assert rv.decide(split, rv.ConsensusRule()).status == "disagreement"


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"agree": 0}, "agree"),
        ({"on_disagreement": "vote"}, "on_disagreement"),
        ({"agree": 3, "max_votes": 2}, "max_votes"),
    ],
)
def test_bad_rules_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        rv.ConsensusRule(**kwargs)


def test_latest_vote_per_reviewer_counts_but_every_vote_is_kept(cat):
    store = cat["store"]
    item = rv.round_items(store)[0]
    rv.record_verdict(store, item, "alice", "reject")
    rv.record_verdict(store, item, "alice", "confirm", category="crack")
    assert store.query("SELECT COUNT(*) FROM reviews")[0][0] == 2
    votes = rv.latest_votes(store)[item.key]
    assert [(v.reviewer, v.verdict) for v in votes] == [("alice", "confirm")]


# -- queues and undo --------------------------------------------------------------------------
def test_round_items_are_in_rank_order_with_why(cat):
    items = rv.round_items(cat["store"])
    assert [it.rank for it in items] == list(range(1, 9))
    scores = [it.score for it in items]
    assert scores == sorted(scores, reverse=True)
    assert items[0].why["strategy"] == "top" and "contrast" in items[0].why["scorers"]


def test_reviewer_queue_leaves_out_own_votes_and_decided_images(cat):
    store = cat["store"]
    items = rv.round_items(store)
    rv.record_verdict(store, items[0], "alice", "confirm")
    rule2 = rv.ConsensusRule(agree=2)
    # with two votes needed, bob still sees image 0 but alice does not
    assert items[0] not in rv.reviewer_queue(store, items, "alice", rule2)
    assert items[0] in rv.reviewer_queue(store, items, "bob", rule2)
    # with one vote deciding, nobody sees it again
    assert items[0] not in rv.reviewer_queue(store, items, "bob", rv.ConsensusRule())
    assert len(rv.reviewer_queue(store, items, "alice", rule2, include_done=True)) == len(items)


def test_undo_deletes_only_the_reviewers_own_vote(cat):
    store = cat["store"]
    item = rv.round_items(store)[0]
    rid = rv.record_verdict(store, item, "alice", "confirm")
    assert not rv.undo_review(store, rid, "bob")
    assert rv.undo_review(store, rid, "alice")
    assert store.query("SELECT COUNT(*) FROM reviews")[0][0] == 0


def test_image_items_keep_candidate_rows_and_skip_unknown_ids(cat):
    store = cat["store"]
    first = rv.round_items(store)[0]
    items = rv.image_items(store, [first.image_id, 10_000])
    assert items == [first] and items[0].rank == 1


# -- views -----------------------------------------------------------------------------------
def test_disagreements_progress_and_export(cat, tmp_path):
    store = cat["store"]
    items = rv.round_items(store)
    rule = rv.ConsensusRule(agree=2)
    rv.record_verdict(store, items[0], "alice", "confirm", category="crack")
    rv.record_verdict(store, items[0], "bob", "confirm", category="crack")
    rv.record_verdict(store, items[1], "alice", "confirm")
    rv.record_verdict(store, items[1], "bob", "reject")
    rv.record_verdict(store, items[2], "alice", "reject")
    rv.record_verdict(store, items[2], "bob", "reject")

    dis = rv.disagreements(store, rule)
    assert [(d["image_id"], d["status"]) for d in dis] == [(items[1].image_id, "disagreement")]
    assert dis[0]["votes"] == "alice: confirm; bob: reject"

    p = rv.progress(store, rule)
    assert (p["reviewed"], p["votes"], p["confirmed"], p["candidates"]) == (3, 6, 1, 8)
    assert p["curves"][-1] == {"round": 1, "reviewed": 3, "hits": 2}  # first votes: confirm, confirm, reject

    out = tmp_path / "labels.csv"
    assert rv.export_labels(store, out, rule) == 1
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert rows == [
        {
            "path": items[0].path,
            "tile": "-1",
            "label": "1",
            "category": "crack",
            "verdict": "confirm",
            "votes": "alice:confirm:crack;bob:confirm:crack",
            "mask_path": "",
        }
    ]
    assert rv.export_labels(store, out, rule, verdicts=("confirm", "reject")) == 2
    with pytest.raises(ValueError, match="verdicts"):
        rv.export_labels(store, out, rule, verdicts=("yes",))


def test_map_table_carries_scores_and_verdicts(cat):
    store = cat["store"]
    item = rv.round_items(store)[0]
    rv.record_verdict(store, item, "alice", "confirm")
    pts = rv.map_table(store)
    assert len(pts) == 8 and {p["method"] for p in pts} == {"umap"}
    by_id = {p["image_id"]: p for p in pts}
    assert by_id[item.image_id]["status"] == "confirm"
    assert max(pts, key=lambda p: p["score"])["image_id"] == item.image_id  # rank 1 has the top fused score
    with pytest.raises(ValueError, match="tsne"):
        rv.map_table(store, method="tsne")


def test_neighbours_by_cosine_similarity():
    ids = np.array([10, 11, 12, 13])
    vecs = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    near = rv.neighbours(ids, vecs, 10, k=2)
    assert [i for i, _ in near] == [11, 12]
    assert rv.neighbours(ids, vecs, 99) == []


def test_embeddings_read_from_the_catalogue(cat):
    name, ids, vecs = rv.embeddings(cat["store"])
    assert name == "hist" and len(ids) == 8 and vecs.shape == (8, 8)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, rtol=1e-5)


# -- files and pixels ----------------------------------------------------------------------------
def test_check_path_refuses_files_outside_the_roots(cat, tmp_path):
    roots = rv.archive_roots(cat["store"])
    assert roots == [os.path.realpath(cat["root"])]
    assert rv.check_path(cat["paths"][0], roots) == os.path.realpath(cat["paths"][0])
    with pytest.raises(rv.PathOutsideRoots, match="outside"):
        rv.check_path("/etc/passwd", roots)
    with pytest.raises(rv.PathOutsideRoots):
        rv.check_path(os.path.join(cat["root"], "..", "catalogue.db"), roots)
    link = os.path.join(cat["root"], "escape.png")
    os.symlink("/etc/hostname", link)
    with pytest.raises(rv.PathOutsideRoots):
        rv.check_path(link, roots)
    # a sibling folder whose name starts like the root is not inside it
    with pytest.raises(rv.PathOutsideRoots):
        rv.check_path(cat["root"] + "2/x.png", roots)


def test_window_maps_sixteen_bit_levels():
    img = np.array([[0, 1000, 2000, 3000, 65535]], np.uint16)
    out = rv.window(img, level=2000, width=2000)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0, 128, 255, 255]]
    level, width = rv.auto_window(img)
    assert width > 0 and 0 <= level <= 65535
    assert rv.value_range(img) == (0.0, 65535.0)
    with pytest.raises(ValueError, match="width"):
        rv.window(img, 0, 0)
    shown = rv.display_image(np.full((4, 4), 30000, np.uint16))
    assert shown.dtype == np.uint8 and shown.shape == (4, 4)


def test_overlay_blends_a_resized_map():
    pic = np.zeros((20, 30), np.uint8)
    smap = np.zeros((10, 15), np.uint8)
    smap[5:, :] = 255
    out = rv.overlay(pic, smap, 1.0)
    assert out.shape == (20, 30, 3)
    assert out[:5].sum() < out[15:].sum()
    assert (rv.overlay(pic, smap, 0.0) == 0).all()
    with pytest.raises(ValueError, match="opacity"):
        rv.overlay(pic, smap, 2.0)


def test_thumbnails_shrink_and_square_up():
    pic = np.full((100, 50), 200, np.uint8)
    assert rv.thumbnail(pic, 40).shape == (40, 20)
    sq = rv.thumbnail(pic, 40, square=True)
    assert sq.shape == (40, 40) and sq[:, 0].max() == 0 and sq[20, 20] == 200
    assert rv.thumbnail(pic, 400).shape == (100, 50)


def test_strokes_become_a_label_image_in_image_pixels(tmp_path):
    drawing = {
        "objects": [
            {"type": "path", "stroke": "#00ff00", "strokeWidth": 4, "path": [["M", 0, 0], ["L", 199, 0]]},
            {
                "type": "path",
                "stroke": "#FF0000",
                "strokeWidth": 4,
                "path": [["M", 100, 50], ["Q", 100, 50, 100, 100], ["L", 100, 150]],
            },
            {"type": "rect", "stroke": "#ff0000"},
            {"type": "path", "stroke": "#0000ff", "strokeWidth": 4, "path": [["M", 10, 10], ["L", 20, 20]]},
        ]
    }
    labels = rv.strokes_to_labels(drawing, (200, 200), (100, 100), {"#ff0000": rv.DEFECT, "#00ff00": rv.BACKGROUND})
    assert labels.shape == (100, 100) and labels.dtype == np.uint8
    assert labels[0, 50] == rv.BACKGROUND
    assert labels[50, 50] == rv.DEFECT and labels[30, 50] == rv.DEFECT
    assert labels[50, 80] == rv.UNLABELLED and labels[7, 7] == rv.UNLABELLED
    # Fabric 7 (streamlit-drawable-canvas 0.13) writes "Path" with a centre origin; a moved stroke moves
    fabric7 = {
        "objects": [
            {
                "type": "Path",
                "stroke": "#ff0000",
                "strokeWidth": 2,
                "originX": "center",
                "originY": "center",
                "left": 150,
                "top": 60,
                "path": [["M", 20, 20], ["L", 60, 100]],
            }
        ]
    }
    moved = rv.strokes_to_labels(fabric7, (200, 200), (100, 100), {"#ff0000": rv.DEFECT})
    ys, xs = np.nonzero(moved)
    assert abs(xs.mean() - 75) <= 1 and abs(ys.mean() - 30) <= 1  # centre (150, 60) on the canvas, halved
    path = rv.save_label_image(labels, tmp_path / "cat.db", 7)  # named by image id (and content), not file name
    assert os.path.dirname(path) == str(tmp_path / "cat.labels") and os.path.basename(path).startswith("7_")
    np.testing.assert_array_equal(cv2.imread(path, cv2.IMREAD_UNCHANGED), labels)
    with pytest.raises(ValueError, match="0, 1 or 2"):
        rv.save_label_image(labels * 3, tmp_path / "cat.db", 8)
    mask = rv.save_defect_mask(labels, tmp_path / "cat.db", 7, tile=3)
    assert os.path.dirname(mask) == str(tmp_path / "cat.masks") and os.path.basename(mask).startswith("7_t3_")
    np.testing.assert_array_equal(cv2.imread(mask, cv2.IMREAD_UNCHANGED), np.where(labels == rv.DEFECT, 255, 0))
    assert rv.save_defect_mask(np.where(labels == rv.DEFECT, 1, labels).astype(np.uint8), tmp_path / "c.db", 9) is None
    with pytest.raises(TypeError, match="catalogue id"):
        rv.save_defect_mask(labels, tmp_path / "cat.db", "/archive/a/tile_7.png")


def test_mask_annotation_goes_with_its_vote(cat):
    store = cat["store"]
    item = rv.round_items(store)[0]
    rid = rv.record_verdict(store, item, "alice", "confirm", mask_path="/m.png")
    rv.add_mask_annotation(store, item.image_id, rid, "/l.png", "crack", mask_path="/m.png")
    kind, data = store.query("SELECT kind, data FROM annotations")[0]
    assert kind == "mask" and json.loads(data)["path"] == "/l.png" and json.loads(data)["mask"] == "/m.png"
    rv.undo_review(store, rid, "alice")
    assert store.query("SELECT COUNT(*) FROM annotations")[0][0] == 0


# -- several reviewers: claims ------------------------------------------------------------------------
def test_a_claim_keeps_other_reviewers_off_until_it_lapses_or_is_released(cat):
    store = cat["store"]
    a, b = rv.round_items(store)[:2]
    assert rv.claim(store, a, "alice") and not rv.claim(store, a, "bob")
    assert rv.claim(store, a, "alice")  # renewing one's own claim
    ok, why = rv.needs_vote(store, a, "bob")
    assert not ok and why == "alice is looking at it"
    assert rv.needs_vote(store, a, "alice") == (True, "")
    assert rv.release(store, "alice", a) == 1 and rv.claim(store, a, "bob")
    assert rv.claim(store, b, "carol", seconds=-1)  # already lapsed
    assert b.key not in rv.claims(store) and rv.claim(store, b, "bob")
    assert rv.release(store, "bob") == 2 and rv.claims(store) == {}


def test_a_claim_is_shared_while_consensus_needs_more_votes(cat):
    store = cat["store"]
    item = rv.round_items(store)[0]
    two = rv.ConsensusRule(agree=2)
    assert rv.claim(store, item, "alice")
    assert rv.needs_vote(store, item, "bob", two) == (True, "")  # two votes needed, one reviewer looking
    assert rv.claim(store, item, "bob", share=True)
    assert [who for who, _ in rv.claims(store)[item.key]] == ["alice", "bob"]
    ok, why = rv.needs_vote(store, item, "carol", two)
    assert not ok and why == "alice, bob are looking at it"  # enough reviewers for the votes needed
    assert not rv.needs_vote(store, item, "carol")[0]  # one vote decides: alice alone is enough
    rv.record_verdict(store, item, "alice", "confirm")
    rv.release(store, "alice", item)
    assert rv.needs_vote(store, item, "carol", two)[0] is False  # bob may give the one vote still needed
    assert rv.release(store, "bob", item) == 1 and rv.needs_vote(store, item, "carol", two) == (True, "")


def test_needs_vote_follows_the_consensus_rule(cat):
    store = cat["store"]
    item = rv.round_items(store)[0]
    rv.record_verdict(store, item, "alice", "confirm")
    assert rv.needs_vote(store, item, "alice", rv.ConsensusRule(agree=2)) == (False, "you already voted on it")
    assert rv.needs_vote(store, item, "bob", rv.ConsensusRule(agree=2)) == (True, "")  # one more vote needed
    ok, why = rv.needs_vote(store, item, "bob", rv.ConsensusRule())
    assert not ok and why == "decided confirm (alice: confirm)"
    assert rv.needs_vote(store, item, "bob", rv.ConsensusRule(), include_done=True) == (True, "")


def test_others_decided_reports_only_other_reviewers_after_a_vote_id(cat):
    store = cat["store"]
    items = rv.round_items(store)
    rv.record_verdict(store, items[0], "bob", "reject")
    since = rv.last_review_id(store)
    rv.record_verdict(store, items[1], "bob", "confirm")
    rv.record_verdict(store, items[2], "alice", "confirm")
    got = rv.others_decided(store, items, "alice", since)
    assert [(r["image_id"], r["status"], r["verdict"], r["votes"]) for r in got] == [
        (items[1].image_id, "decided", "confirm", "bob: confirm")
    ]


def test_preferences_are_per_reviewer(cat):
    store = cat["store"]
    rv.set_pref(store, "alice", "opacity", 0.4)
    assert rv.get_pref(store, "alice", "opacity", 0.0) == 0.4 and rv.get_pref(store, "bob", "opacity", 0.0) == 0.0


# -- why, neighbours, reference -------------------------------------------------------------------------
def test_percent_and_ordinal_for_people():
    assert [rv.percent(x) for x in (0.997, 1, 0.5, 0.12345, None)] == ["99.7 %", "100 %", "50 %", "12.3 %", "-"]
    assert [rv.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 103)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "103rd"
    ]  # fmt: skip


def test_why_sentences_name_each_scorer_with_its_place(cat):
    store = cat["store"]
    items = rv.round_items(store)
    text = rv.why_sentences(store, items[2])
    assert text[0].startswith("picked by top; rank 3 of the round; fused score ")
    assert text[1].startswith("contrast: score ") and text[1].endswith("; top 38 % (3rd highest of 8)")


def test_nearest_by_distance_and_the_normal_reference(cat):
    ids = np.array([1, 2, 3, 4])
    vecs = np.array([[0, 0], [3, 4], [1, 0], [10, 0]], np.float32)
    assert rv.nearest(ids, vecs, 1, k=2) == [(3, 1.0), (2, 5.0)]
    assert rv.nearest(ids, vecs, 1, k=2, among=[2, 4]) == [(2, 5.0), (4, 10.0)]
    assert rv.nearest(ids, vecs, 99) == []
    store = cat["store"]
    items = rv.round_items(store)
    for it in items[-3:]:  # three decided normal: the reference is the nearest of them
        rv.record_verdict(store, it, "alice", "reject")
    pool, how = rv.normal_pool(store)
    assert sorted(pool) == sorted(it.image_id for it in items[-3:]) and how == "decided normal by reviewers"
    _, ids, vecs = rv.raw_embeddings(store)
    ref = rv.reference_image(store, items[0])
    want = rv.nearest(ids, vecs, items[0].image_id, 1, among=pool)[0]
    assert ref == (want[0], want[1], how)


# -- what the viewer is sent --------------------------------------------------------------------------
def test_hot_region_outlines_a_small_blob_in_image_pixels():
    smap = np.zeros((64, 64), np.uint8)
    smap[20:24, 40:44] = 255  # a 4 x 4 map blob; the image is 4x larger
    hot = rv.hot_region(smap, (256, 256))
    assert hot["peak"] == [162, 82]
    (contour,) = hot["contours"]
    xy = np.array(contour)
    assert xy[:, 0].min() >= 158 and xy[:, 0].max() <= 178 and xy[:, 1].min() >= 78 and xy[:, 1].max() <= 98
    assert rv.hot_region(np.full((8, 8), 7, np.uint8), (16, 16))["contours"] == []  # flat map: nothing hot
    smap[50:52, 10:12] = 200  # a second, cooler region: H visits the hottest first
    hot = rv.hot_region(smap, (256, 256))
    assert [r["peak"] for r in hot["regions"]] == [[162, 82], [42, 202]] and len(hot["contours"]) == 2


def test_a_large_16_bit_image_is_sent_as_a_view_sized_8_bit_copy_with_a_full_resolution_crop():
    big = np.random.default_rng(0).integers(0, 65535, (3000, 4000), dtype=np.uint16)
    shown = rv.display_image(big)
    view, scale = rv.view_rendering(shown, 2048)
    assert view.dtype == np.uint8 and max(view.shape) == 2048 and scale == pytest.approx(2048 / 4000)
    crop, (x0, y0) = rv.crop_around(shown, (3990, 10), 160)
    assert crop.shape == (160, 160) and (x0, y0) == (3840, 0)
    np.testing.assert_array_equal(crop, shown[:160, 3840:])  # full resolution, not the view copy
    small = np.zeros((50, 60), np.uint8)
    assert rv.view_rendering(small)[0] is small and rv.crop_around(small, (0, 0), 160)[0].shape == (50, 60)


def test_why_says_which_ranking_the_adaptive_strategy_followed_and_its_record(cat):
    import dataclasses

    store = cat["store"]
    item = rv.round_items(store)[0]
    why = {"strategy": "adaptive", "by": "learned", "arm_rank": 1, "arm_hits": 2, "arm_misses": 1}
    text = rv.why_sentences(store, dataclasses.replace(item, why=why, strategy="adaptive"))
    assert text[0].startswith(
        "picked by adaptive following more like the confirmed images (learned), 2 of its 3 earlier picks confirmed;"
    ), text[0]
    first = {"strategy": "adaptive", "by": "contrast", "arm_hits": 0, "arm_misses": 0}
    text = rv.why_sentences(store, dataclasses.replace(item, why=first, strategy="adaptive"))
    assert text[0].startswith("picked by adaptive following contrast, first try;"), text[0]
