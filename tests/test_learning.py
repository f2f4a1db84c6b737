"""Learning from verdicts: strategies, the re-ranker's out-of-fold rule, calibration, metrics, slices, simulate."""

from __future__ import annotations

import csv
import json
import os
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mining import metrics
from mining.catalogue.store import Store
from mining.learning.learn import learn
from mining.learning.slices import slice_report, slice_table
from mining.ranking.rank import STRATEGIES, FusedScores, fuse, get_strategy, rank
from mining.ranking.rerank import (
    RERANK_SCORER,
    ReRanker,
    best_threshold,
    build_features,
    consensus_labels,
    threshold_map,
)
from mining.ranking.strategies import k_center_greedy, mixture_counts, parse_mixture


# -- helpers -------------------------------------------------------------------------------
def fused_table(n: int, raw: np.ndarray | None = None) -> FusedScores:
    raw = np.arange(n, dtype=float)[:, None] if raw is None else raw
    pct, fused = fuse(raw)
    return FusedScores(np.arange(100, 100 + n), ["a"], raw, pct, fused)


def rows_of(picks) -> list[int]:
    return [i for i, _ in picks]


def make_store(path, n: int = 200, n_pos: int = 12, seed: int = 0, meta: dict | None = None) -> tuple[Store, dict]:
    """A catalogue of n fake images with two scorers and an embedding; positives score high on one stat."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    truth = np.zeros(n, int)
    truth[rng.choice(n, n_pos, replace=False)] = 1
    now = time.time()
    with store.transaction() as con:
        for i in range(n):
            con.execute(
                "INSERT INTO images (id, path, status, indexed_at) VALUES (?, ?, 'ok', ?)",
                (i + 1, f"/fake/img_{i:04d}.png", now),
            )
            signal = rng.normal(2.5 * truth[i], 1.0)
            con.execute(
                "INSERT INTO scores (image_id, tile, scorer, score, stats, created_at)"
                " VALUES (?, -1, 'alpha', ?, ?, ?)",
                (i + 1, float(rng.normal()), json.dumps({"peak": float(signal), "best_tile": 3}), now),
            )
            con.execute(
                "INSERT INTO scores (image_id, tile, scorer, score, stats, created_at)"
                " VALUES (?, -1, 'beta', ?, '{}', ?)",
                (i + 1, float(rng.normal() + truth[i]), now),
            )
            vec = rng.normal(size=8).astype(np.float32)
            vec[0] += 3 * truth[i]
            con.execute(
                "INSERT INTO embeddings (image_id, tile, name, vector) VALUES (?, -1, 'emb', ?)", (i + 1, vec.tobytes())
            )
            for key, values in (meta or {}).items():
                con.execute("INSERT INTO image_meta (image_id, key, value) VALUES (?, ?, ?)", (i + 1, key, values[i]))
    return store, {i + 1: int(truth[i]) for i in range(n)}


def review_all(store: Store, truth: dict, ids) -> None:
    for iid in ids:
        store.add_review(
            int(iid),
            "t",
            "confirm" if truth[int(iid)] else "reject",
            category="spot" if truth[int(iid)] else None,
            source="test",
        )


# -- strategies on hand-made cases --------------------------------------------------------
def test_top_uses_probability_when_given_and_fused_otherwise():
    fs = fused_table(5)
    cands = np.arange(5)
    assert rows_of(STRATEGIES["top"](fs, cands, 2)) == [4, 3]
    p = np.array([0.9, 0.1, 0.5, 0.2, 0.3])
    picks = STRATEGIES["top"](fs, cands, 2, proba=p)
    assert rows_of(picks) == [0, 2]
    assert picks[0][1]["strategy"] == "top" and picks[0][1]["p"] == 0.9


def test_top_cold_start_round_robin_takes_each_scorers_best_in_turn():
    raw = np.array([[9, 0], [8, 1], [7, 9], [0, 8], [1, 7], [2, 2]], dtype=float)
    fs = fused_table(6, raw)
    fs.scorers = ["good", "noise"]
    picks = STRATEGIES["top"](fs, np.arange(6), 4, cold_start="round_robin")
    assert rows_of(picks) == [0, 2, 1, 3]  # good's 1st, noise's 1st, good's 2nd, noise's 2nd (row 2 taken)
    assert [p[1]["scorer"] for p in picks] == ["good", "noise", "good", "noise"]
    assert rows_of(STRATEGIES["top"](fs, np.arange(6), 2)) == [2, 0]  # fused: mean percentile
    with pytest.raises(ValueError, match="cold_start"):
        STRATEGIES["top"](fs, np.arange(6), 2, cold_start="max")
    # a scorer the fusion weighs 0 (rank.weights) takes no turn: with one scorer left, its order alone
    third = np.array([[5], [4], [3], [2], [1], [0]], dtype=float)
    fs3 = fused_table(6, np.hstack([raw, third]))
    fs3.scorers, fs3.weights = ["good", "noise", "third"], np.array([1.0, 0.0, 1.0])
    picks = STRATEGIES["top"](fs3, np.arange(6), 4, cold_start="round_robin")
    assert rows_of(picks) == [0, 1, 2, 3] and {p[1]["scorer"] for p in picks} == {"good", "third"}


def test_fused_scores_keep_the_weights_and_rank_honours_them_in_the_cold_start(tmp_path):
    from mining.ranking.rank import fused_scores

    store, _ = make_store(tmp_path / "w.db")
    with store:
        fs = fused_scores(store, {"alpha": 0})
        assert list(fs.weights) == [0.0 if n == "alpha" else 1.0 for n in fs.scorers]
        r = rank(store, strategy="top", n=10, weights={"alpha": 0}, cold_start="round_robin")
        picked = [i for (i,) in store.query("SELECT image_id FROM candidates WHERE round = ? ORDER BY rank", (r,))]
        beta = store.query("SELECT image_id FROM scores WHERE scorer = 'beta' ORDER BY score DESC LIMIT 10")
    assert picked == [i for (i,) in beta]  # alpha (weight 0) took no turn


def test_uncertainty_strategies_pick_the_right_row():
    fs = fused_table(4)
    P = np.array(
        [
            [0.52, 0.40, 0.08],  # least confident (max p lowest... among the first three: 0.52)
            [0.53, 0.45, 0.02],  # smallest margin (0.08)
            [0.54, 0.23, 0.23],  # highest entropy
            [0.90, 0.05, 0.05],
        ]
    )  # sure
    cands = np.arange(4)
    assert rows_of(STRATEGIES["least_confidence"](fs, cands, 1, proba=P)) == [0]
    assert rows_of(STRATEGIES["margin"](fs, cands, 1, proba=P)) == [1]
    assert rows_of(STRATEGIES["entropy"](fs, cands, 1, proba=P)) == [2]
    for kind in ("least_confidence", "margin", "entropy"):
        assert rows_of(STRATEGIES[kind](fs, cands, 4, proba=P))[-1] == 3


def test_binary_least_confidence_picks_p_nearest_half_and_respects_candidates():
    fs = fused_table(5)
    p = np.array([0.49, 0.9, 0.05, 0.6, 0.51])
    picks = STRATEGIES["least_confidence"](fs, np.array([1, 2, 3, 4]), 2, proba=p)
    assert rows_of(picks) == [4, 3]  # row 0 is not a candidate
    assert picks[0][1]["least_confidence"] == pytest.approx(0.49)


def test_uncertainty_without_a_model_falls_back_to_top_and_says_so():
    fs = fused_table(5)
    picks = STRATEGIES["entropy"](fs, np.arange(5), 2)
    assert rows_of(picks) == [4, 3]
    assert picks[0][1]["strategy"] == "entropy" and "fallback" in picks[0][1]


def test_random_is_seeded_and_draws_candidates_only():
    fs = fused_table(50)
    cands = np.arange(10, 50)
    a = rows_of(STRATEGIES["random"](fs, cands, 8, random_state=3))
    b = rows_of(STRATEGIES["random"](fs, cands, 8, random_state=3))
    c = rows_of(STRATEGIES["random"](fs, cands, 8, random_state=4))
    assert a == b and a != c and len(set(a)) == 8 and set(a) <= set(cands.tolist())


def test_diversity_covers_unreviewed_clusters_first():
    # three tight clusters; rows 0-3 (cluster A) are reviewed (not candidates)
    V = np.array(
        [
            [0, 0],
            [0, 0.1],
            [0.1, 0],
            [0.1, 0.1],  # A
            [10, 0],
            [10, 0.1],
            [10.1, 0],  # B
            [0, 10],
            [0.1, 10],
            [0, 10.1],
        ],
        dtype=float,
    )  # C
    fs = fused_table(len(V))
    picks = STRATEGIES["diversity"](fs, np.arange(4, 10), 2, vectors=V)
    clusters = {("B" if i < 7 else "C") for i in rows_of(picks)}
    assert clusters == {"B", "C"}
    assert k_center_greedy(V, np.array([], int), np.arange(10), 3)[:1] != []


def test_balanced_gives_each_known_category_its_picks():
    V = np.array(
        [
            [0, 0],
            [10, 10],  # confirmed: crack near (0,0), spot near (10,10)
            [0.5, 0],
            [0, 0.4],
            [0.2, 0.2],  # crack-like candidates
            [10, 9.5],
            [9.8, 10],
        ],
        dtype=float,
    )  # spot-like candidates
    fs = fused_table(len(V))
    p = np.array([1, 1, 0.9, 0.8, 0.5, 0.2, 0.3])
    picks = STRATEGIES["balanced"](
        fs, np.arange(2, 7), 3, categories={0: "crack", 1: "spot"}, proba=p, vectors=V, per_category=1, base="top"
    )
    rows = rows_of(picks)
    assert rows[:2] == [2, 6]  # the most likely crack, the most likely spot
    assert picks[0][1]["category"] == "crack" and picks[1][1]["category"] == "spot"
    assert rows[2] == 3 and picks[2][1]["via"] == "top"
    with pytest.raises(ValueError, match="base must be"):
        STRATEGIES["balanced"](fs, np.arange(2, 7), 3, base="nope", categories={0: "crack"}, vectors=V)


def test_mixture_splits_the_batch_and_records_each_pick():
    assert parse_mixture("top:0.8,least_confidence:0.2") == [("top", 0.8), ("least_confidence", 0.2)]
    assert mixture_counts([("a", 0.8), ("b", 0.2)], 24) == [19, 5]
    assert sum(mixture_counts([("a", 1 / 3), ("b", 1 / 3), ("c", 1 / 3)], 10)) == 10
    fs = fused_table(20)
    picks = get_strategy("top:0.5,random:0.5")(fs, np.arange(20), 6, random_state=0)
    rows = rows_of(picks)
    assert len(set(rows)) == 6
    assert rows[:3] == [19, 18, 17]
    assert [info["strategy"] for _, info in picks] == ["top"] * 3 + ["random"] * 3
    assert all(info["mixture"] == "top:0.5,random:0.5" for _, info in picks)
    for bad in ("top:0.5,nope:0.5", "top=1", "top:0"):
        with pytest.raises(ValueError):
            get_strategy(bad)(fs, np.arange(20), 3)
    with pytest.raises(ValueError, match="valid strategies"):
        get_strategy("nope")


def test_rank_records_the_strategy_of_each_candidate(tmp_path):
    store, _ = make_store(tmp_path / "c.db", n=60, n_pos=4)
    r = rank(store, strategy="top:0.5,diversity:0.5", n=6, random_state=0)
    cands = store.candidates(r)
    assert [c["strategy"] for c in cands] == ["top"] * 3 + ["diversity"] * 3
    why = json.loads(cands[3]["why"])
    assert why["strategy"] == "diversity" and why["mixture"] == "top:0.5,diversity:0.5" and "space" in why
    store.close()


# -- re-ranker ------------------------------------------------------------------------------
def test_out_of_fold_no_row_is_scored_by_a_model_that_saw_it():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 6))
    y = (rng.random(150) < 0.3).astype(float)  # labels are pure noise
    y[120:] = np.nan
    model = ReRanker(n_folds=5, n_estimators=80, max_depth=4)
    res = model.fit_predict(X, y)
    lab = np.flatnonzero(~np.isnan(y))
    assert set(res.fold[lab]) == set(range(5)) and (res.fold[120:] == -1).all()
    for r in lab:
        assert r not in set(model.train_rows_[res.fold[r]].tolist())
        assert res.proba[r] == pytest.approx(model.models_[res.fold[r]].predict_proba(X[r : r + 1])[0, 1])
    # noise can be memorised in-sample but not out of fold
    in_sample = model.models_[0].predict_proba(X[model.train_rows_[0]])[:, 1]
    assert roc_auc_score(y[model.train_rows_[0]], in_sample) > 0.9
    assert roc_auc_score(y[lab], res.proba[lab]) < 0.7
    assert np.allclose(res.proba[120:], model.predict_proba(X[120:]))


def test_reranker_needs_two_of_each_class():
    y = np.array([1, 0, 0, 0, np.nan])
    assert "2 confirmed" in ReRanker.can_fit(y)
    with pytest.raises(ValueError, match="cannot train"):
        ReRanker().fit_predict(np.zeros((5, 2)), y)


# -- calibration ----------------------------------------------------------------------------
def test_threshold_map_sends_threshold_to_half_and_keeps_unit_interval():
    p = np.linspace(0, 1, 101)
    for t in (0.1, 0.3, 0.8):
        q = threshold_map(p, t)
        assert threshold_map(np.array([0.0, t, 1.0]), t) == pytest.approx([0, 0.5, 1])
        assert (np.diff(q) >= 0).all() and q.min() >= 0 and q.max() <= 1
        # linear on each side
        below, above = p[p <= t], p[p > t]
        assert np.allclose(threshold_map(below, t), 0.5 * below / t)
        assert np.allclose(threshold_map(above, t), 0.5 + 0.5 * (above - t) / (1 - t))
    with pytest.raises(ValueError, match="threshold"):
        threshold_map(p, 1.0)


def test_best_threshold_maximises_f1():
    y = np.array([0, 0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.65, 0.9])
    t = best_threshold(y, p)
    f1 = lambda th: 2 * ((p >= th) & (y == 1)).sum() / ((p >= th).sum() + y.sum())  # noqa: E731
    assert f1(t) == pytest.approx(max(f1(th) for th in p))


@pytest.mark.parametrize("calibration", ["threshold", "isotonic", "sigmoid"])
def test_calibrated_reranker_stays_in_unit_interval_and_ranks(calibration):
    rng = np.random.default_rng(1)
    y = (rng.random(160) < 0.25).astype(float)
    X = np.column_stack([y * 2 + rng.normal(size=160), rng.normal(size=160)])
    y[130:] = np.nan
    model = ReRanker(n_folds=4, calibration=calibration, n_estimators=40)
    res = model.fit_predict(X, y)
    assert (res.proba >= 0).all() and (res.proba <= 1).all()
    lab = ~np.isnan(y)
    assert roc_auc_score(y[lab], res.proba[lab]) > 0.8
    if calibration == "threshold":
        assert len(res.thresholds) == 4 and all(0 < t < 1 for t in res.thresholds)


# -- learn and consensus ------------------------------------------------------------------
def test_consensus_majority_ignores_unsure_and_drops_ties(tmp_path):
    store, _ = make_store(tmp_path / "c.db", n=5, n_pos=1)
    for who, v in (("a", "confirm"), ("b", "confirm"), ("c", "reject")):
        store.add_review(1, who, v, category="spot" if v == "confirm" else None)
    store.add_review(2, "a", "confirm")
    store.add_review(2, "b", "reject")
    store.add_review(3, "a", "unsure")
    store.add_review(4, "a", "reject")
    labels = consensus_labels(store)
    assert labels[1] == (1, "spot") and labels[4] == (0, None)
    assert 2 not in labels and 3 not in labels
    store.close()


def test_learn_writes_out_of_fold_probabilities_that_find_the_events(tmp_path):
    store, truth = make_store(tmp_path / "c.db", n=200, n_pos=14)
    ids = sorted(truth)
    rep = learn(store, calibration=None)
    assert rep.reranker is None and "2 confirmed" in rep.reranker_skipped
    review_all(store, truth, ids[:120])
    rep = learn(store, calibration="threshold", n_folds=4)
    assert rep.reranker is not None and rep.reranker["n_folds"] == 4
    rows = store.query("SELECT image_id, score, stats FROM scores WHERE scorer = ?", (RERANK_SCORER,))
    assert len(rows) == 200
    stats = {r[0]: json.loads(r[2]) for r in rows}
    assert all(stats[i]["oof"] == 1 and stats[i]["fold"] >= 0 for i in ids[:120])
    assert all(stats[i]["oof"] == 0 for i in ids[120:])
    y = np.array([truth[r[0]] for r in rows])
    assert metrics.average_precision(y, [r[1] for r in rows]) > 0.5
    ft = build_features(store)
    assert "alpha.peak" in ft.names and "alpha.best_tile" not in ft.names and RERANK_SCORER not in ft.names
    assert any(n.startswith("emb.emb.") for n in ft.names)
    # the next round uses it: top picks unreviewed images with the highest probability
    r = rank(store, strategy="least_confidence", n=5)
    assert all(json.loads(c["why"])["strategy"] == "least_confidence" for c in store.candidates(r))
    store.close()


# -- metrics against scikit-learn ---------------------------------------------------------------
def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.1).astype(int)
    s = rng.normal(size=300) + y
    assert metrics.average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    order = np.argsort(-s)
    for k in (0, 10, 30, 300):
        assert metrics.recall_at_k(y, s, k) == pytest.approx(y[order[:k]].sum() / y.sum())
    assert metrics.recall_at_fraction(y, s, 0.1) == metrics.recall_at_k(y, s, 30)
    assert metrics.hits_per_n(y, s, 30) == y[order[:30]].sum()
    assert metrics.recall_curve(y, s)[29] == pytest.approx(metrics.recall_at_k(y, s, 30))
    masks = [rng.random((8, 9)) < 0.2, rng.random((5, 4)) < 0.2]
    maps = [m + rng.normal(size=m.shape) for m in masks]
    flat_y = np.concatenate([m.ravel() for m in masks]).astype(int)
    flat_s = np.concatenate([m.ravel() for m in maps])
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(flat_y, flat_s))
    assert np.isnan(metrics.auroc(np.zeros(5), np.arange(5)))
    with pytest.raises(ValueError, match="same length"):
        metrics.auroc([0, 1], [0.3])


# -- slices ---------------------------------------------------------------------------------
def test_slice_report_flags_a_planted_confound(tmp_path):
    rng = np.random.default_rng(3)
    n = 200
    side = np.where(np.arange(n) % 2 == 0, "left", "right").tolist()
    camera = rng.choice(["cam1", "cam2"], n).tolist()
    store, truth = make_store(tmp_path / "c.db", n=n, n_pos=0, meta={"side": side, "camera": camera})
    # every confirmed defect is on the left-hand side: 15 confirmed of 60 reviewed left, 0 of 60 right
    left = [i + 1 for i in range(n) if side[i] == "left"]
    right = [i + 1 for i in range(n) if side[i] == "right"]
    truth = dict.fromkeys(truth, 0)
    truth.update(dict.fromkeys(left[:15], 1))
    review_all(store, truth, left[:60] + right[:60])
    rows = slice_report(store)
    by = {(r["key"], r["value"]): r for r in rows}
    assert by[("side", "left")]["events_concentrate"] and by[("side", "left")]["confirmed"] == 15
    assert not by[("side", "right")]["events_concentrate"]
    assert not any(by[("camera", c)]["events_concentrate"] for c in ("cam1", "cam2"))
    # a model that scores the side: normal left images score higher than normal right ones
    scores = np.where(np.array(side) == "left", 0.8, 0.2) + rng.normal(0, 0.05, n)
    labels = np.array([truth[i + 1] if (i + 1) in left[:60] + right[:60] else np.nan for i in range(n)])
    table = slice_table({"side": side}, labels, scores)
    assert next(r for r in table if r["value"] == "left")["model_prefers_slice"]
    with pytest.raises(ValueError, match="unknown metadata keys"):
        slice_report(store, keys=["site"])
    store.close()


# -- simulate ---------------------------------------------------------------------------------
def test_simulate_cli_writes_summary_csv_and_plots(tmp_path):
    from typer.testing import CliRunner

    from raremine.cli import app

    store, truth = make_store(tmp_path / "c.db", n=120, n_pos=8)
    store.close()
    with open(tmp_path / "truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "category", "mask"])
        for iid, lab in truth.items():
            w.writerow([f"/fake/img_{iid - 1:04d}.png", lab, "spot" if lab else "", ""])
    out = tmp_path / "sim"
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "--db",
            str(tmp_path / "c.db"),
            "--truth",
            str(tmp_path / "truth.csv"),
            "--strategy",
            "top:0.75,least_confidence:0.25",
            "--batch",
            "12",
            "--rounds",
            "2",
            "--out",
            str(out),
            "--set",
            "learn.calibration=none",
            "--set",
            "learn.n_folds=3",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reviewed_per_round"] == [12, 24]
    assert len(summary["recall_per_round"]) == len(summary["ap_per_round"]) == 2
    assert summary["recall_per_round"][-1] > summary["random_recall_per_round"][-1]
    assert (out / "rounds.csv").read_text().count("\n") == 3
    assert (out / "recall.png").stat().st_size > 1000 and (out / "ap.png").exists()
    # the original catalogue is untouched
    with Store(tmp_path / "c.db") as s:
        assert s.status()["reviews"] == 0
    res = CliRunner().invoke(app, ["learn", "--db", str(out / "catalogue.db"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["n_labelled"] == 24


def test_learn_retrains_the_pixel_model_from_painted_masks(tmp_path, tiny_archive):
    pytest.importorskip("mining.models.pixel")
    import cv2

    from mining.catalogue.index import index_archive

    store = Store(tmp_path / "c.db")
    index_archive(store, [tiny_archive["root"]])
    painted = 0
    for row in store.images():
        if tiny_archive["truth"].get(row["path"]):
            mask = np.zeros((64, 64), np.uint8)
            cv2.circle(mask, (32, 30), 4, 255, -1)
            mask_path = str(tmp_path / f"mask_{row['id']}.png")
            cv2.imwrite(mask_path, mask)
            store.add_review(row["id"], "t", "confirm", mask_path=mask_path, source="test")
            painted += 1
    assert painted == 2
    rep = learn(store, rerank=False, pixel=True)
    assert rep.pixel is not None and rep.pixel["images"] == 2, rep.pixel_skipped
    assert rep.pixel["base_images"] == 0  # no earlier model: the painted masks alone
    assert store.latest_model("pixel")["id"] == rep.pixel["model_id"]
    store.close()


def test_pixel_retraining_keeps_the_fit_pixel_training_set(tmp_path, tiny_archive):
    pytest.importorskip("mining.models.pixel")
    import cv2

    from mining.catalogue.index import index_archive
    from mining.learning.pixel_fit import fit_pixel
    from mining.models.pixel import load_training_pairs

    base = _blob_training_set(tmp_path / "base", seed=5)  # the user's own set: 3 images with a blob
    store = Store(tmp_path / "c.db")
    index_archive(store, [tiny_archive["root"]])
    first = fit_pixel(store, base["images"], base["labels"])
    for row in store.images():
        if tiny_archive["truth"].get(row["path"]):
            mask = np.zeros((64, 64), np.uint8)
            cv2.circle(mask, (32, 30), 4, 255, -1)
            cv2.imwrite(str(tmp_path / f"mask_{row['id']}.png"), mask)
            store.add_review(row["id"], "t", "confirm", mask_path=str(tmp_path / f"mask_{row['id']}.png"), source="t")
    for _ in range(2):  # and again: the base set is carried through every retraining, not the copies
        rep = learn(store, rerank=False, pixel=True)
        assert rep.pixel["images"] == 2 and rep.pixel["base_images"] == 3, rep.pixel
        training = json.loads(store.latest_model("pixel")["config"])["training"]
        assert training["base"] == {k: os.path.abspath(v) for k, v in base.items()} and training["pairs"] == 5
        stems = sorted(os.path.basename(p) for _, _, p in load_training_pairs(training["images"], training["labels"]))
        assert [f for f in stems if f.startswith("base-")] == [f"base-train{i}.png" for i in range(3)]
        assert len(stems) == 5
    assert rep.pixel["model_id"] != first["model_id"]
    store.close()


def test_simulate_mixed_supervision_paints_masks_and_rescores_with_the_new_pixel_model(tmp_path, tiny_archive):
    pytest.importorskip("mining.models.pixel")
    import cv2

    from mining.catalogue.index import index_archive
    from mining.job.mine import mine
    from mining.learning.simulate import read_truth, simulate
    from mining.scorers import get_scorer

    store = Store(tmp_path / "c.db")
    index_archive(store, [tiny_archive["root"]])
    mine(store, [get_scorer("contrast")], backend="inline", save_maps=False)
    rows = [["path", "label", "category", "mask"]]
    for path, lab in tiny_archive["truth"].items():
        mask_path = ""
        if lab:
            mask = np.zeros((64, 64), np.uint8)
            cv2.circle(mask, (32, 30), 4, 255, -1)
            mask_path = str(tmp_path / f"mask_{len(rows)}.png")
            cv2.imwrite(mask_path, mask)
        rows.append([path, lab, "spot" if lab else "", mask_path])
    with open(tmp_path / "truth.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    truth = read_truth(tmp_path / "truth.csv", store)
    out = simulate(
        store, truth, strategy="top", batch=5, rounds=1, masks_per_round=1, learn_kwargs={"calibration": None}
    )
    assert out["found_per_round"] == [2]  # contrast finds both blobs in the top 5
    assert out["learn_per_round"][0]["pixel"]["images"] == 1  # one mask painted this round
    assert len(store.scored_ids("pixel")) == 40  # the archive was scored again with the new pixel model
    assert store.query("SELECT COUNT(*) FROM reviews WHERE mask_path IS NOT NULL")[0][0] == 1
    store.close()


@pytest.mark.slow
def test_pixel_retraining_takes_normal_verdicts_and_retunes_on_growth(tmp_path, tiny_archive, monkeypatch):
    pytest.importorskip("mining.models.pixel")

    import mining.models.pixel_tune as pt
    from mining.catalogue.index import index_archive
    from mining.learning.pixel_fit import fit_pixel
    from mining.models.pixel import load_pixel_model, load_training_pairs

    monkeypatch.setattr(pt, "TUNE_CLASSIFIER", {**pt.TUNE_CLASSIFIER, "n_estimators": 10, "max_depth": 3})
    monkeypatch.setattr(pt, "ROWS_PER_CLASS", 300)
    base = _blob_training_set(tmp_path / "base", seed=6)
    store = Store(tmp_path / "c.db")
    index_archive(store, [tiny_archive["root"]])
    first = fit_pixel(store, base["images"], base["labels"])
    assert first["metrics"]["tuning"]["estimate"]["images"] == 3
    normals = [r for r in store.images() if not tiny_archive["truth"].get(r["path"])][:4]
    store.add_review(normals[0]["id"], "t", "reject", source="t")  # an image-level verdict only, no mask painted
    rep = learn(store, rerank=False, pixel=True)
    assert rep.pixel["images"] == 0 and rep.pixel["normal_images"] == 1 and rep.pixel["base_images"] == 3
    assert not rep.pixel["tuned"]  # 4 labelled images < 1.5 x 3: the first tuning is kept
    training = json.loads(store.latest_model("pixel")["config"])["training"]
    pairs = load_training_pairs(training["images"], training["labels"])
    assert sum(1 for _, lab, _ in pairs if lab.max() == 1) == 1
    model = load_pixel_model(rep.pixel["path"])
    assert model.metrics["tuning"]["estimate"]["reused"] is True
    for row in normals[1:]:
        store.add_review(row["id"], "t", "reject", source="t")
    rep = learn(store, rerank=False, pixel=True)
    assert rep.pixel["normal_images"] == 4 and rep.pixel["tuned"]  # 7 >= 1.5 x 3: tuned again
    assert load_pixel_model(rep.pixel["path"]).metrics["tuning"]["estimate"]["images"] == 7
    store.close()


def _blob_training_set(folder, seed: int) -> dict[str, str]:
    """Three 64 x 64 textures with a blob each, fully labelled (1 background, 2 the blob), as fit-pixel reads them."""
    import cv2

    from tests.conftest import add_blob, make_texture

    base = {"images": str(folder / "images"), "labels": str(folder / "labels")}
    for d in base.values():
        os.makedirs(d)
    rng = np.random.default_rng(seed)
    for i in range(3):
        img = add_blob(make_texture(rng), (20 + 8 * i, 32))
        lab = np.ones((64, 64), np.uint8)
        cv2.circle(lab, (20 + 8 * i, 32), 4, 2, -1)
        cv2.imwrite(os.path.join(base["images"], f"train{i}.png"), img)
        cv2.imwrite(os.path.join(base["labels"], f"train{i}.png"), lab)
    return base


# -- rounds chosen step by step ---------------------------------------------------------------
def test_a_round_chosen_step_by_step_fills_to_its_target_without_repeats(tmp_path):
    from mining.ranking.rank import extend_round, rank, round_target

    store, truth = make_store(tmp_path / "c.db", n=60, n_pos=4)
    r = rank(store, strategy="top", n=4, target=10)
    assert round_target(store, r) == 10 and len(store.candidates(r)) == 4
    review_all(store, truth, [c["image_id"] for c in store.candidates(r)][:3])  # one left unreviewed
    assert extend_round(store, strategy="top", n=4) == 4
    assert extend_round(store, strategy="top", n=4) == 2  # only up to the target
    assert extend_round(store, strategy="top", n=4) == 0
    cands = store.candidates(r)
    assert [c["rank"] for c in cands] == list(range(1, 11))
    assert len({c["image_id"] for c in cands}) == 10  # no image twice, the unreviewed one not again
    assert store.current_round() == r  # the same round, not new ones
    whole = rank(store, strategy="top", n=5)
    assert round_target(store, whole) == 5 and extend_round(store, strategy="top", n=3) == 0  # a whole round is full
    with pytest.raises(ValueError, match="target must be >= n"):
        rank(store, strategy="top", n=5, target=3)
    store.close()


def test_extend_round_without_any_round_adds_nothing(tmp_path):
    from mining.ranking.rank import extend_round

    store, _ = make_store(tmp_path / "c.db", n=30, n_pos=2)
    assert extend_round(store, strategy="top", n=3) == 0
    with pytest.raises(ValueError, match="n must be >= 1"):
        extend_round(store, strategy="top", n=0)
    store.close()


def test_choosing_a_round_step_by_step_finds_more_defects_in_it_than_choosing_it_whole(tmp_path):
    # the defects share a direction of the embedding ("more like this" can find them once one is
    # confirmed), while the scorers hardly rank them: verdicts used within the round pay off
    from mining.learning.simulate import Truth, simulate

    found = {0: 0, 4: 0}
    for seed in (1, 2, 3):
        for step in found:
            store, truth = make_store(tmp_path / f"c{seed}_{step}.db", n=300, n_pos=10, seed=seed)
            ids = np.array(sorted(truth))
            lab = np.array([truth[i] for i in ids])
            t = Truth(ids, lab, ["spot" if v else None for v in lab], [None] * len(ids))
            out = simulate(
                store,
                t,
                strategy="adaptive",
                batch=16,
                rounds=1,
                step=step,
                learn_kwargs={"calibration": None, "n_folds": 3},
            )
            assert out["reviewed_per_round"] == [16] and out["step"] == (step or 16)
            assert len(store.candidates(1)) == 16 and store.current_round() == 1
            found[step] += out["found_per_round"][0]
            store.close()
    assert found[4] > found[0] + 3, found


def test_two_extensions_at_once_neither_repeat_an_image_nor_pass_the_target(tmp_path, monkeypatch):
    # a second app server extends the round while this one is still choosing (between its
    # choice and its write): the write reads the round again inside its transaction
    import mining.ranking.rank as rk

    store, _ = make_store(tmp_path / "c.db", n=60, n_pos=4)
    rk.rank(store, strategy="top", n=3, target=8)
    other = Store(tmp_path / "c.db")
    real_choose = rk._choose

    def choose_while_the_other_extends(*args):
        out = real_choose(*args)
        monkeypatch.setattr(rk, "_choose", real_choose)
        assert rk.extend_round(other, strategy="top", n=4) == 4  # the same top images, written first
        return out

    monkeypatch.setattr(rk, "_choose", choose_while_the_other_extends)
    added = rk.extend_round(store, strategy="top", n=4)
    cands = store.candidates(1)
    assert added == 0 and len(cands) == 7  # its choice was the other's: none written twice
    assert len({c["image_id"] for c in cands}) == 7 and [c["rank"] for c in cands] == list(range(1, 8))
    assert rk.extend_round(store, strategy="top", n=4) == 1  # and never past the target
    other.close()
    store.close()


def test_two_processes_ranking_at_once_write_two_rounds(tmp_path, monkeypatch):
    # the round's number is taken inside the write transaction, not before the (slow) choice
    import mining.ranking.rank as rk

    store, _ = make_store(tmp_path / "c.db", n=60, n_pos=4)
    other = Store(tmp_path / "c.db")
    real_choose = rk._choose

    def choose_while_the_other_ranks(*args):
        out = real_choose(*args)
        monkeypatch.setattr(rk, "_choose", real_choose)
        assert rk.rank(other, strategy="top", n=3) == 1
        return out

    monkeypatch.setattr(rk, "_choose", choose_while_the_other_ranks)
    assert rk.rank(store, strategy="top", n=4) == 2
    assert [len(store.candidates(r)) for r in (1, 2)] == [3, 4]
    other.close()
    store.close()
