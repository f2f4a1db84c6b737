"""The adaptive strategy: verdicts decide which ranking to follow; "more like this" from confirmed images."""

from __future__ import annotations

import numpy as np

from mining.ranking.rank import STRATEGIES, FusedScores, fuse
from mining.ranking.similar import like_confirmed


def _table(raw: np.ndarray, names: list[str]) -> FusedScores:
    pct, fused = fuse(raw)
    return FusedScores(np.arange(1, len(raw) + 1), names, raw, pct, fused)


def _archive(n=400, n_pos=12, seed=0):
    """One scorer finds the rare rows (its top ranks), three are pure noise."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, int)
    y[rng.choice(n, n_pos, replace=False)] = 1
    good = rng.normal(size=n) + 4 * y
    raw = np.column_stack([good, rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)])
    return _table(raw, ["good", "noise1", "noise2", "noise3"]), y


def test_first_round_takes_every_ranking_then_follows_the_one_that_finds_defects():
    fs, y = _archive()
    select = STRATEGIES["adaptive"]
    first = select(fs, np.arange(len(y)), 24, labels={}, random_state=0)
    arms = [info["by"] for _, info in first]
    assert {"good", "noise1", "noise2", "noise3", "fused"} <= set(arms)  # nobody knows yet: all arms tried
    labels = {int(fs.image_ids[i]): int(y[i]) for i, _ in first}
    history = [(int(fs.image_ids[i]), info["by"]) for i, info in first]
    rest = np.setdiff1d(np.arange(len(y)), [i for i, _ in first])
    second = select(fs, rest, 24, labels=labels, history=history, random_state=1)
    by_good = sum(info["by"] == "good" for _, info in second)
    assert by_good >= 14, [info["by"] for _, info in second]
    found = sum(y[i] for i, _ in first) + sum(y[i] for i, _ in second)
    top_noise = np.argsort(-fs.raw[:, 1])[:48]
    assert found > y[top_noise].sum() and found >= 8  # far above following a noise scorer (or chance: ~1.4)


def test_adaptive_is_seeded_and_picks_candidates_only_once():
    fs, y = _archive(seed=1)
    cands = np.arange(0, len(y), 2)
    a = STRATEGIES["adaptive"](fs, cands, 30, labels={}, random_state=5)
    b = STRATEGIES["adaptive"](fs, cands, 30, labels={}, random_state=5)
    assert a == b
    rows = [i for i, _ in a]
    assert len(rows) == len(set(rows)) == 30 and set(rows) <= set(cands.tolist())


def test_more_like_this_ranks_neighbours_of_confirmed_rows_first_and_never_matches_itself():
    V = np.array([[0.0, 0.0], [10.0, 10.0], [10.5, 10.0], [0.2, 0.1], [30.0, 30.0]])
    closeness = like_confirmed(V, np.array([1]))
    assert np.nanargmax(closeness) == 2  # nearest to the confirmed row 1
    assert np.isnan(closeness[1])  # its only confirmed neighbour is itself: NaN
    both = like_confirmed(V, np.array([1, 2]))
    assert np.isclose(both[1], -0.5) and np.isclose(both[2], -0.5)  # each compared with the other only


def test_an_arm_is_judged_by_its_own_picks_read_back_from_the_catalogue(tmp_path):
    """Through rank(): the picks' arms are recorded in `why` and read back as the bandit's evidence."""
    from mining.ranking.rank import rank
    from mining.ranking.strategies import pick_history
    from tests.test_learning import make_store, review_all

    store, truth = make_store(tmp_path / "c.db", n=200, n_pos=12, seed=3)
    with store:
        r1 = rank(store, strategy="adaptive", n=20, random_state=0)
        review_all(store, truth, [c["image_id"] for c in store.candidates(r1)])
        history = pick_history(store)
        assert len(history) == 20 and {arm for _, arm in history} <= {"alpha", "beta", "fused"}
        r2 = rank(store, strategy="adaptive", n=20, random_state=1)
        import json

        whys = [json.loads(c["why"]) for c in store.candidates(r2)]
        beta_hits = sum(truth[i] for i, arm in history if arm == "beta")
        alpha_hits = sum(truth[i] for i, arm in history if arm == "alpha")
        by_beta = sum(w["by"] == "beta" for w in whys)
        by_alpha = sum(w["by"] == "alpha" for w in whys)
        assert beta_hits > alpha_hits  # beta carries the signal in make_store; alpha's score is noise
        assert by_beta > by_alpha, whys
        assert all("arm_hits" in w for w in whys)


def test_patch_level_more_like_this_finds_the_image_with_the_same_small_defect():
    """A defect patch hidden among ordinary patches: the whole-image vector cannot see it, the patch set can."""
    from mining.ranking.similar import like_confirmed_patches

    rng = np.random.default_rng(0)
    P = rng.normal(size=(50, 4, 8)).astype(np.float32)  # 50 images, 4 hot patches each, 8 features
    defect = np.full(8, 6.0, np.float32)
    # the same kind of defect in 3 images, at any place of their sets; the confirmed row 3 has it first
    for r, slot in [(3, 0), (17, 2), (41, 3)]:
        P[r, slot] = defect + rng.normal(scale=0.1, size=8)
    closeness = like_confirmed_patches(P, np.array([3]))
    order = np.argsort(-np.nan_to_num(closeness, nan=-np.inf))
    assert set(order[:2]) == {17, 41}
    assert np.isnan(closeness[3])  # never matches itself
    P[8] = np.nan  # a row without a patch set gets no value
    assert np.isnan(like_confirmed_patches(P, np.array([3]))[8])


def test_patch_sets_round_trip_through_the_catalogue_vector():
    import pytest

    from mining.catalogue.store import pack_patch_set, unpack_patch_set

    P = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert np.array_equal(unpack_patch_set(pack_patch_set(P)), P)
    assert unpack_patch_set(np.ones(7, np.float32)[:1].tobytes()) is None  # no values: malformed
    with pytest.raises(ValueError, match=r"shape \(K, D\)"):
        pack_patch_set(np.ones(5))


def test_learned_more_like_this_finds_kin_that_nearest_neighbours_miss():
    """Rare rows differ from the rest in one direction among many noisy ones: the learned arm finds that
    direction from three confirmed rows; the distance to the nearest confirmed row drowns in the noise."""
    from mining.ranking.similar import confirmed_vs_rest

    rng = np.random.default_rng(0)
    n, d = 800, 40
    F = rng.normal(size=(n, d))
    rare = rng.choice(n, 12, replace=False)
    F[rare, 0] += 4.0
    confirmed = rare[:3]
    learned = confirmed_vs_rest(F, confirmed, random_state=0)
    nearest = like_confirmed(F, confirmed)
    rest = np.setdiff1d(np.arange(n), confirmed)
    top = 40  # 5 % of the archive

    def found(values):
        order = rest[np.argsort(-values[rest])][:top]
        return np.isin(order, rare).sum()

    assert found(learned) >= 6, found(learned)  # of the 9 unconfirmed rare rows
    assert found(learned) > found(nearest) + 3, (found(learned), found(nearest))
    # out of fold and seeded: the same call gives the same values; no confirmed row, no values
    assert np.array_equal(learned, confirmed_vs_rest(F, confirmed, random_state=0))
    assert np.isnan(confirmed_vs_rest(F, np.array([], dtype=np.int64))).all()


def test_learned_arm_trains_on_a_bounded_sample_of_the_rest():
    from mining.ranking.similar import confirmed_vs_rest

    rng = np.random.default_rng(1)
    F = rng.normal(size=(3000, 6))
    F[:5, 1] += 5
    v = confirmed_vs_rest(F, np.arange(3), max_rest=200, random_state=0)
    assert np.isfinite(v).all()  # every row is scored, though each fold trained on at most 200 others
    assert set(np.argsort(-v)[:10]) >= {3, 4}


def _store_with_vectors(path, vectors: np.ndarray):
    """A catalogue of ``len(vectors)`` images, one score each and the rows of ``vectors`` as embedding 'e'."""
    from mining.catalogue.store import Store

    store = Store(path)
    with store.transaction() as con:
        for i, vec in enumerate(vectors, start=1):
            con.execute("INSERT INTO images (id, path, status, indexed_at) VALUES (?, ?, 'ok', 0)", (i, f"/f/{i}.png"))
            con.execute(
                "INSERT INTO scores (image_id, tile, scorer, score, created_at) VALUES (?, -1, 'a', ?, 0)",
                (i, float(i)),
            )
            con.execute(
                "INSERT INTO embeddings (image_id, tile, name, vector) VALUES (?, -1, 'e', ?)",
                (i, np.asarray(vec, np.float32).tobytes()),
            )
    return store


def test_embedding_spaces_are_reused_until_the_embeddings_change(tmp_path, monkeypatch):
    import mining.ranking.similar as sim
    from mining.ranking.fusion import fused_scores

    store = _store_with_vectors(tmp_path / "c.db", np.random.default_rng(0).normal(size=(40, 40)))
    fs = fused_scores(store)
    calls = []
    real = sim._embedding_spaces
    monkeypatch.setattr(sim, "_embedding_spaces", lambda *a: calls.append(1) or real(*a))
    first = sim.embedding_spaces(store, fs)
    again = sim.embedding_spaces(store, fs)
    assert len(calls) == 1 and again["e"] is first["e"] and not first["e"].flags.writeable
    assert first["e"].shape == (40, 32)
    with store.transaction() as con:  # mining went on: a vector was replaced
        con.execute(
            "INSERT OR REPLACE INTO embeddings (image_id, tile, name, vector) VALUES (1, -1, 'e', ?)",
            (np.zeros(40, np.float32).tobytes(),),
        )
    fresh = sim.embedding_spaces(store, fs)
    assert len(calls) == 2 and not np.allclose(fresh["e"], first["e"])
    store.close()


def test_the_pca_of_a_large_space_is_fitted_on_a_bounded_sample_and_projects_every_row(tmp_path, monkeypatch):
    import mining.ranking.similar as sim
    from mining.ranking.fusion import fused_scores

    monkeypatch.setattr(sim, "PCA_FIT_ROWS", 50)
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 40))
    vectors = (rng.normal(size=(200, 3)) * [5, 3, 2]) @ basis + rng.normal(size=(200, 40)) * 0.01
    store = _store_with_vectors(tmp_path / "c.db", vectors)
    Z = sim.embedding_spaces(store, fused_scores(store), components=3)["e"]
    assert Z.shape == (200, 3) and np.isfinite(Z).all()
    # the three true directions are found from 50 rows: the projection keeps nearly all the variance
    V = np.stack(
        [np.frombuffer(b, np.float32) for (b,) in store.query("SELECT vector FROM embeddings ORDER BY image_id")]
    )
    V = (V - V.mean(0)) / V.std(0)
    assert Z.var(axis=0).sum() > 0.95 * V.var(axis=0).sum()
    store.close()


def test_an_arm_is_credited_with_every_verdict_down_to_the_depth_of_its_own_picks():
    from mining.ranking.strategies import arm_evidence

    ids = np.arange(10, 20)
    good = np.arange(10, 0, -1, dtype=float)  # ranks image 10 first, 11 second, ...
    noise = np.array([0, 9, 8, 7, 6, 5, 4, 3, 2, 1], dtype=float)  # 11 first, 10 last
    late = np.full(10, np.nan)
    late[5] = 1.0
    arms = {"good": good, "noise": noise, "late": late, "unused": good.copy()}
    labels = {10: 1, 11: 0, 12: 1}
    history = [(11, "noise"), (12, "good"), (10, "late")]  # "late" picked image 10 while it was its own top
    ev = arm_evidence(arms, ids, labels, history)
    # good picked 12 (its rank 3): 10 and 12 confirmed and 11 rejected lie above it, whoever picked them
    assert ev[0].tolist() == [2, 1]
    # noise picked 11 (its rank 1): only its own miss; the defect 10 it ranks last does not count
    assert ev[1].tolist() == [0, 1]
    # late's ranking moved: it no longer ranks its own pick at all, so it has no depth and no evidence
    assert ev[2].tolist() == [0, 0]
    history.append((15, "late"))  # a pick it still ranks first: its depth is 1, and 15 has no verdict
    assert arm_evidence(arms, ids, labels, history)[2].tolist() == [0, 0]
    labels[15] = 0
    assert arm_evidence(arms, ids, labels, history)[2].tolist() == [0, 1]
    assert ev[3].tolist() == [0, 0]  # no picks of its own: the prior alone
