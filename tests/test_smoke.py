from mining.catalogue.index import index_archive
from mining.catalogue.store import Store
from mining.job.mine import mine
from mining.ranking.rank import rank
from mining.scorers import get_scorer


def test_index_mine_rank_finds_blobs(tiny_archive, tmp_path):
    with Store(tmp_path / "c.db") as store:
        s = index_archive(store, [tiny_archive["root"]])
        assert s.new == 40
        mine(store, [get_scorer("contrast")], backend="inline")
        r = rank(store, n=5)
        top = [c["path"] for c in store.candidates(r)]
    hits = [p for p in top[:2] if tiny_archive["truth"][p]]
    assert len(hits) == 2
