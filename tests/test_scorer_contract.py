"""The scorer contract, checked on every registered scorer.

- a pickle round trip (to the workers) scores an image exactly as before;
- ``score_batch`` equals ``score_image`` one by one;
- scores, maps and embeddings are finite;
- the constructor arguments round-trip: ``get_scorer(name, **scorer.config())``
  builds a scorer with the same config;
- higher means rarer: mined alone over a small archive with two blatant
  defects, both rank in the top quarter, and every image has its score.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from mining.catalogue.index import index_archive
from mining.catalogue.store import Store
from mining.io import read_image
from mining.job.mine import mine
from mining.scorers import SCORERS, get_scorer
from tests.conftest import add_blob, texture_archive

#: small settings that keep each scorer fast (the defaults are used for every other argument)
SMALL = {
    "autoencoder": {"size": 32, "epochs": 5, "sample_size": 24},
    "embedding": {"map_method": "none"},
    "backbone": {"size": 64, "bank_images": 12},
    "contrast": {},
    "pixel": {},
}


def _weights() -> str | None:
    from tests.test_unsupervised import WEIGHTS

    return WEIGHTS


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    def paint(img):
        return add_blob(add_blob(img, (20, 24), radius=6, value=255), (44, 40), radius=5, value=10)

    return texture_archive(tmp_path_factory.mktemp("contract"), 24, 4, (5, 17), paint, "c_{:02d}.png")


def _prepared(name: str, store, tmp_path, monkeypatch):
    if name == "backbone":
        if _weights() is None:
            pytest.skip("MobileNetV2 weights absent")
        monkeypatch.setenv("RAREMINE_BACKBONE_WEIGHTS", _weights())
    if name == "pixel":
        from mining.models.pixel import fit_pixel_model
        from tests.test_pixel import FAST, _blob_pair

        rng = np.random.default_rng(1)
        pairs = [(*_blob_pair(rng, (16 + 10 * i, 40 - 6 * i)), f"train{i}") for i in range(4)]
        model = fit_pixel_model(pairs, classifier=FAST, budget=4000, class_names={2: "blob"})
        meta, _fmt = model.save(tmp_path / "models")
        return get_scorer("pixel", model=meta).prepare(store)
    return get_scorer(name, **SMALL[name]).prepare(store)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorer_contract(name, archive, tmp_path, monkeypatch):
    with Store(tmp_path / "c.db") as store:
        index_archive(store, [archive["root"]])
        scorer = _prepared(name, store, tmp_path, monkeypatch)
        paths = sorted(archive["truth"])
        images = [read_image(p) for p in paths[:4]]
        one = [scorer.score_image(im) for im in images]
        # pickle round trip (what the workers receive)
        clone = pickle.loads(pickle.dumps(scorer))
        for im, a in zip(images, one, strict=True):
            b = clone.score_image(im)
            assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-6)
        # score_batch == score_image
        for a, b in zip(one, scorer.score_batch(images), strict=True):
            assert a.score == pytest.approx(b.score, rel=1e-4, abs=1e-5)
            if a.map is not None:
                np.testing.assert_allclose(a.map, b.map, rtol=1e-4, atol=1e-5)
            if a.embedding is not None:
                np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-4, atol=1e-5)
        # finite
        for r in one:
            assert np.isfinite(r.score)
            assert r.map is None or np.isfinite(r.map).all()
            assert r.embedding is None or np.isfinite(r.embedding).all()
            assert all(np.isfinite(v) for v in r.stats.values() if isinstance(v, float))
        # config round trip
        cfg = scorer.config()
        assert get_scorer(name, **cfg).config() == cfg
        # higher means rarer, and every score row is final
        mine(store, [scorer], backend="inline", save_maps=False)
        _ids, names, table = store.score_table()
        assert name in names
        by_path = {r["id"]: r["path"] for r in store.images()}
        assert set(table[name]) == set(by_path), "every image has exactly its one final score"
        order = sorted(table[name], key=lambda i: -table[name][i])
        top = {os.path.basename(by_path[i]) for i in order[: len(order) // 4]}
        assert {"c_05.png", "c_17.png"} <= top, (name, [os.path.basename(by_path[i]) for i in order[:8]])


@pytest.mark.slow
def test_archive_stage_scores_exist_only_when_final_and_a_killed_job_resumes_the_stage(archive, tmp_path, monkeypatch):
    """No placeholder row between the streaming pass and finalize; a rerun finishes the archive stage only."""
    from mining.scorers.embedding import EmbeddingScorer

    calls = []

    def killed(self, store, run_id=None):
        calls.append("finalize")
        raise KeyboardInterrupt("killed in the archive stage")

    with Store(tmp_path / "c.db") as store:
        index_archive(store, [archive["root"]])
        monkeypatch.setattr(EmbeddingScorer, "finalize", killed)
        with pytest.raises(KeyboardInterrupt):
            mine(store, [get_scorer("embedding", map_method="none")], backend="inline", save_maps=False)
        assert calls == ["finalize"]
        assert store.query("SELECT COUNT(*) FROM scores WHERE scorer = 'embedding'")[0][0] == 0
        assert store.query("SELECT COUNT(*) FROM embeddings WHERE name = 'descriptors'")[0][0] == 24
        monkeypatch.undo()
        summary = mine(store, [get_scorer("embedding", map_method="none")], backend="inline", save_maps=False)
        assert summary.done == 0 and summary.skipped == 24  # the streaming pass is not redone
        scores = dict(store.query("SELECT image_id, score FROM scores WHERE scorer = 'embedding' AND tile = -1"))
        assert len(scores) == 24 and len(set(scores.values())) > 1
