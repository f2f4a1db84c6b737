"""Indexing: readable formats, every unreadable kind, incremental runs, tiling, real data."""

import os

import cv2
import numpy as np
import pytest
import tifffile

import mining.catalogue.index as index_mod
import mining.io as io_mod
from mining.catalogue.index import index_archive
from mining.catalogue.store import Store
from mining.io import UnreadableImage, read_image, to_float_gray

from .conftest import MAGNETIC_TILE, requires_magnetic_tile


@pytest.fixture
def good_files(tmp_path):
    root = tmp_path / "arch"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    g8 = rng.integers(0, 255, (40, 50), dtype=np.uint8)
    cv2.imwrite(str(root / "a.png"), g8)
    cv2.imwrite(str(root / "sub" / "b.jpg"), cv2.merge([g8, g8, g8]))
    cv2.imwrite(str(root / "c.bmp"), g8)
    cv2.imwrite(str(root / "d16.png"), (g8.astype(np.uint16) * 257))
    tifffile.imwrite(root / "e16.tif", g8.astype(np.uint16) * 200)
    cv2.imwrite(str(root / "f8.tiff"), g8)
    np.save(root / "g.npy", g8.astype(np.float32))
    (root / "notes.txt").write_text("not indexed: other extension")
    return root


def _status(db):
    with Store(db) as s:
        return s.status()


def test_reads_every_supported_format(good_files, tmp_path):
    db = tmp_path / "c.db"
    with Store(db) as s:
        summary = index_archive(s, [good_files])
        rows = {os.path.basename(r["path"]): r for r in s.images()}
    assert summary.new == 7 and not summary.unreadable
    assert set(rows) == {"a.png", "b.jpg", "c.bmp", "d16.png", "e16.tif", "f8.tiff", "g.npy"}
    assert rows["d16.png"]["dtype"] == "uint16"
    assert rows["e16.tif"]["dtype"] == "uint16"
    assert rows["b.jpg"]["channels"] == 3
    assert rows["g.npy"]["dtype"] == "float32"
    assert (rows["a.png"]["width"], rows["a.png"]["height"]) == (50, 40)
    assert all(len(r["sha256"]) == 64 for r in rows.values())


def test_to_float_gray_rule():
    assert to_float_gray(np.full((2, 2), 255, np.uint8)).max() == pytest.approx(1.0)
    assert to_float_gray(np.full((2, 2), 65535, np.uint16)).max() == pytest.approx(1.0)
    f = to_float_gray(np.array([[2.0, 4.0]], np.float32))
    np.testing.assert_allclose(f, [[0.0, 1.0]])
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 1] = 255
    assert to_float_gray(rgb)[0, 0] == pytest.approx(0.587, abs=0.01)


def _make_broken(folder):
    """One file per unreadable reason; returns reason -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    ok_png = cv2.imencode(".png", rng.integers(0, 255, (64, 64), dtype=np.uint8))[1].tobytes()
    ok_jpg = cv2.imencode(".jpg", rng.integers(0, 255, (64, 64), dtype=np.uint8))[1].tobytes()
    files = {}
    files["empty"] = folder / "empty.png"
    files["empty"].write_bytes(b"")
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(ok_jpg[: len(ok_jpg) // 2])
    files["truncated_png"] = folder / "truncated.png"
    files["truncated_png"].write_bytes(ok_png[: len(ok_png) // 2])
    files["not_an_image"] = folder / "text.png"
    files["not_an_image"].write_text("this is not a PNG")
    files["unsupported"] = folder / "volume.npy"
    np.save(files["unsupported"], np.zeros((2, 3, 4, 5), np.uint8))
    files["too_large"] = folder / "huge.png"
    cv2.imwrite(str(files["too_large"]), np.zeros((300, 400), np.uint8))
    files["broken_link"] = folder / "link.png"
    os.symlink(folder / "gone.png", files["broken_link"])
    files["permission_denied"] = folder / "secret.png"
    files["permission_denied"].write_bytes(ok_png)
    os.chmod(files["permission_denied"], 0)
    return files


@pytest.fixture
def deny_secret(monkeypatch):
    """Make secret.png unreadable even for root (chmod 0 does not stop root)."""
    real_open = open

    def fake_open(path, *args, **kwargs):
        if os.fspath(path).endswith("secret.png"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    if os.geteuid() == 0:
        monkeypatch.setattr(io_mod, "open", fake_open, raising=False)


def test_every_unreadable_kind_is_recorded_and_job_goes_on(tmp_path, deny_secret):
    _make_broken(tmp_path / "bad")
    cv2.imwrite(str(tmp_path / "bad" / "good.png"), np.zeros((8, 8), np.uint8))
    with Store(tmp_path / "c.db") as s:
        summary = index_archive(s, [tmp_path / "bad"], max_pixels=100_000)
        reasons = {os.path.basename(r["path"]): r["reason"] for r in s.images(status="unreadable")}
        details = {r["reason"]: r["detail"] for r in s.images(status="unreadable")}
        assert len(s.images()) == 1
    assert reasons == {
        "empty.png": "empty",
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "text.png": "not_an_image",
        "volume.npy": "unsupported",
        "huge.png": "too_large",
        "link.png": "broken_link",
        "secret.png": "permission_denied",
    }
    assert summary.unreadable["truncated"] == 2
    assert "max_pixels=100000" in details["too_large"]
    assert "shape" in details["unsupported"]


def test_read_image_raises_with_reason(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"")
    with pytest.raises(UnreadableImage) as info:
        read_image(p)
    assert info.value.reason == "empty" and str(p) in str(info.value)


def test_incremental_reindex_decodes_nothing(tiny_archive, tmp_path, monkeypatch):
    db = tmp_path / "c.db"
    with Store(db) as s:
        first = index_archive(s, [tiny_archive["root"]])
    assert first.new == 40

    def no_decode(*a, **k):
        raise AssertionError("an unchanged file was decoded again")

    monkeypatch.setattr(index_mod, "inspect_image", no_decode)
    with Store(db) as s:
        second = index_archive(s, [tiny_archive["root"]])
    assert (second.unchanged, second.new, second.changed) == (40, 0, 0)
    assert _status(db)["images_ok"] == 40


def test_changed_and_missing_files(tmp_path):
    root = tmp_path / "arch"
    root.mkdir()
    for i in range(3):
        cv2.imwrite(str(root / f"{i}.png"), np.full((16, 16), i * 50, np.uint8))
    db = tmp_path / "c.db"
    with Store(db) as s:
        index_archive(s, [root])
        iid = s.image_id(str(root / "0.png"))
        with s.transaction() as con:
            con.execute("INSERT INTO scores (image_id, scorer, score, created_at) VALUES (?, 'x', 1, 0)", (iid,))
    cv2.imwrite(str(root / "0.png"), np.full((20, 24), 200, np.uint8))
    os.utime(root / "0.png", ns=(1, 1))  # a different mtime even on coarse clocks
    os.remove(root / "2.png")
    with Store(db) as s:
        summary = index_archive(s, [root])
        row = s.query("SELECT * FROM images WHERE id = ?", (iid,))[0]
        assert (row["width"], row["height"]) == (24, 20)
        assert s.scored_ids("x") == set(), "scores of the old content must go"
    assert (summary.changed, summary.unchanged, summary.missing) == (1, 1, 1)
    assert _status(db)["unreadable_reasons"] == {"missing": 1}


def test_large_images_become_tiles(tmp_path):
    root = tmp_path / "arch"
    root.mkdir()
    cv2.imwrite(str(root / "big.png"), np.zeros((300, 500), np.uint8))
    cv2.imwrite(str(root / "small.png"), np.zeros((100, 100), np.uint8))
    with Store(tmp_path / "c.db") as s:
        summary = index_archive(s, [root], tile_size=128, tile_overlap=16)
        big = s.image_id(str(root / "big.png"))
        small = s.image_id(str(root / "small.png"))
        tiles = s.tiles(big)
        assert s.tiles(small) == []
    assert summary.tiled == 1
    assert len(tiles) == 3 * 5  # rows 0,112,172 ; cols 0,112,224,336,372
    assert tiles[-1][1:] == (172, 372, 128, 128)


def test_bad_root_and_tile_settings(tmp_path):
    with Store(tmp_path / "c.db") as s:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            index_archive(s, [tmp_path / "nope"])
        with pytest.raises(ValueError, match="overlap"):
            index_archive(s, [tmp_path], tile_size=64, tile_overlap=64)


@requires_magnetic_tile
def test_magnetic_tile_jpgs_all_readable_plus_broken(tmp_path, deny_secret):
    broken = tmp_path / "broken"
    files = _make_broken(broken)
    for key in ("too_large", "truncated_png", "unsupported"):
        os.remove(files[key])  # keep five broken files of five kinds
    db = tmp_path / "c.db"
    with Store(db) as s:
        # the dataset's .png files are its masks: index its .jpg images only
        tiles = index_archive(s, [MAGNETIC_TILE], extensions=[".jpg"])
        bad = index_archive(s, [broken])
    st = _status(db)
    assert tiles.new == 1344 and not tiles.unreadable
    assert bad.unreadable.total() == 5
    assert st["images_ok"] == 1344
    assert st["images_unreadable"] == 5 and len(st["unreadable_reasons"]) == 5
