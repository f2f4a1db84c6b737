"""Fault injection for indexing and decoding: each case of the reliability issue reproduced and its outcome asserted.

Through the CLI in a subprocess with a timeout (a hang fails the test instead of
hanging CI) and a cap on its address space (a runaway read fails instead of
taking the machine's memory), or through the library. Every case checks that
nothing else in the batch is lost and that the reason is recorded.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

import mining.io as io_mod
from mining.catalogue.index import index_archive
from mining.catalogue.store import Store
from mining.io import UnreadableImage, decode_bytes, read_image

#: Peak resident memory allowed to a command that meets a decompression bomb.
PEAK_RSS_LIMIT = 500 * 2**20
BOMB_SIDE = 20_000  # 400 MP declared: above the default max_pixels (200 MP) and PIL's own bomb limit

# Runs a command as a child and prints its exit code, peak RSS (bytes) and output as JSON:
# a fresh parent, so RUSAGE_CHILDREN holds that one command only. The child's address
# space is capped so that a decode of a bomb fails rather than filling the machine.
_MEASURE = """
import json, resource, subprocess, sys
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
try:
    r = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]), preexec_fn=cap)
    rc, out, err = r.returncode, r.stdout, r.stderr
except subprocess.TimeoutExpired as e:
    rc, out, err = "timeout", str(e.stdout), str(e.stderr)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"rc": rc, "peak": peak, "stdout": out, "stderr": err[-3000:]}))
"""


def _cli(*args: str, timeout: float = 90) -> dict:
    """Run ``python -m raremine.cli ARGS``; return rc ("timeout" when it hung), peak RSS and output."""
    cmd = [sys.executable, "-c", _MEASURE, str(timeout), sys.executable, "-m", "raremine.cli", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _rows(db) -> dict[str, dict]:
    with Store(db) as s:
        return {os.path.basename(r["path"]): dict(r) for r in s.query("SELECT * FROM images")}


def _good(folder, name: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(folder / name), cv2.GaussianBlur(rng.integers(0, 255, (48, 64), dtype=np.uint8), (5, 5), 0))


# -- decompression bombs: a few KB declaring 20000 x 20000 ------------------------------------------
def _png_bomb(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compress(bytes((w + 1) * 64), 9)  # the first rows; a decoder would allocate all of them
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _bmp_bomb(w: int, h: int) -> bytes:
    # 8-bit RLE (BI_RLE8) whose data ends at once: decoders fill the whole bitmap with the background
    palette = b"".join(struct.pack("<BBBB", i, i, i, 0) for i in range(256))
    rle = b"\x00\x01"  # end of bitmap
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(rle), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle


def _tiff_bomb(w: int, h: int) -> bytes:
    # classic little-endian TIFF, one uncompressed 8-bit strip declared w * h bytes long
    data = bytes(1024)
    n = 9
    ifd_at = 8 + len(data)
    tags = [
        (256, 4, w),  # ImageWidth
        (257, 4, h),  # ImageLength
        (258, 3, 8),  # BitsPerSample
        (259, 3, 1),  # Compression: none
        (262, 3, 1),  # Photometric: black is zero
        (273, 4, 8),  # StripOffsets
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, h),  # RowsPerStrip
        (279, 4, w * h),  # StripByteCounts
    ]
    ifd = struct.pack("<H", n)
    for tag, typ, value in tags:
        ifd += struct.pack("<HHI", tag, typ, 1) + (
            struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        )
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + data + ifd


def _jpeg_bomb(w: int, h: int) -> bytes:
    # a real 16 x 16 colour JPEG whose frame header then claims w x h: libjpeg decodes the
    # scan it has, warns, and fills the rest of the w x h x 3 image with grey
    small = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes()
    at = small.index(b"\xff\xc0")
    return small[: at + 5] + struct.pack(">HH", h, w) + small[at + 9 :]


BOMBS = {"png": _png_bomb, "bmp": _bmp_bomb, "tif": _tiff_bomb, "jpg": _jpeg_bomb}


@pytest.mark.parametrize("ext", sorted(BOMBS))
def test_bomb_is_refused_from_its_header(ext, tmp_path):
    data = BOMBS[ext](BOMB_SIDE, BOMB_SIDE)
    assert len(data) < 4096
    path = tmp_path / f"bomb.{ext}"
    path.write_bytes(data)
    for call in (lambda: read_image(path), lambda: decode_bytes(str(path), data)):
        with pytest.raises(UnreadableImage) as info:
            call()
        assert info.value.reason == "too_large"
        assert f"{BOMB_SIDE}x{BOMB_SIDE} px exceeds max_pixels=200000000" in info.value.detail


def test_index_refuses_bombs_within_500_mb(tmp_path):
    """Four formats of 400 MP declared in a few KB: refused unread, the good image indexed, peak RSS < 500 MB.

    Before the fix PIL's DecompressionBombError was swallowed and OpenCV decoded
    each BMP, TIFF and JPEG in full (1.2 GB for the JPEG).
    """
    root = tmp_path / "arch"
    root.mkdir()
    for ext, make in BOMBS.items():
        (root / f"bomb.{ext}").write_bytes(make(BOMB_SIDE, BOMB_SIDE))
    _good(root, "good.png")
    db = tmp_path / "c.db"
    res = _cli("index", str(root), "--db", str(db), "--workers", "2", timeout=120)
    assert res["rc"] == 0, res["stderr"]
    assert res["peak"] < PEAK_RSS_LIMIT, f"peak RSS {res['peak'] / 2**20:.0f} MB"
    rows = _rows(db)
    assert rows["good.png"]["status"] == "ok"
    assert {n: r["reason"] for n, r in rows.items() if n.startswith("bomb")} == {
        f"bomb.{e}": "too_large" for e in BOMBS
    }


def test_oversized_file_is_refused_by_its_size_before_reading(tmp_path, monkeypatch):
    """A file larger than max_pixels allows is refused from stat alone: open() is never called."""
    path = tmp_path / "sparse.tif"
    with open(path, "wb") as fh:
        fh.truncate(20 * 2**20)  # sparse: 20 MB of nothing
    limit = io_mod.max_file_bytes(str(path), 1000)
    assert limit < 20 * 2**20

    def no_open(*args, **kwargs):
        raise AssertionError("an oversized file was opened")

    monkeypatch.setattr(io_mod, "open", no_open, raising=False)
    with pytest.raises(UnreadableImage) as info:
        read_image(path, max_pixels=1000)
    assert info.value.reason == "too_large"
    assert f"{20 * 2**20} bytes exceeds {limit} bytes" in info.value.detail


def test_index_refuses_a_3_gb_sparse_tif_unread(tmp_path):
    root = tmp_path / "arch"
    root.mkdir()
    with open(root / "huge.tif", "wb") as fh:
        fh.truncate(3 * 2**30)  # sparse: takes no disk space
    _good(root, "good.png")
    db = tmp_path / "c.db"
    res = _cli("index", str(root), "--db", str(db), timeout=120)
    assert res["rc"] == 0, res["stderr"]
    assert res["peak"] < PEAK_RSS_LIMIT, f"peak RSS {res['peak'] / 2**20:.0f} MB"
    rows = _rows(db)
    assert rows["good.png"]["status"] == "ok"
    assert rows["huge.tif"]["reason"] == "too_large" and "bytes exceeds" in rows["huge.tif"]["detail"]


# -- files that are not regular files ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs POSIX")
def test_fifo_and_device_are_never_read(tmp_path):
    """A FIFO named *.png and a link to /dev/zero are recorded not_a_file; index and mine finish."""
    root = tmp_path / "arch"
    root.mkdir()
    os.mkfifo(root / "pipe.png")
    os.symlink("/dev/zero", root / "zero.png")
    _good(root, "good.png")
    os.symlink(root / "good.png", root / "link-to-good.png")  # a link to a regular file is fine
    db = tmp_path / "c.db"
    res = _cli("index", str(root), "--db", str(db), timeout=60)
    assert res["rc"] == 0, res["stderr"]
    rows = _rows(db)
    assert rows["good.png"]["status"] == "ok" and rows["link-to-good.png"]["status"] == "ok"
    assert rows["pipe.png"]["reason"] == "not_a_file" and "FIFO" in rows["pipe.png"]["detail"]
    assert rows["zero.png"]["reason"] == "not_a_file" and "character device" in rows["zero.png"]["detail"]
    for name in ("pipe.png", "zero.png"):
        with pytest.raises(UnreadableImage) as info:
            read_image(root / name)
        assert info.value.reason == "not_a_file"
    res = _cli("mine", "--db", str(db), "--scorers", "contrast", timeout=120)
    assert res["rc"] == 0, res["stderr"]


# -- symbolic link loops -----------------------------------------------------------------------------
def test_symlink_loop_indexes_each_file_once(tmp_path):
    root = tmp_path / "arch"
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        _good(root, f"{i}.png", seed=i)
    _good(root / "sub", "s.png")
    os.symlink(root, root / "sub" / "up")  # a loop: a folder link to an ancestor
    os.symlink(root / "sub", root / "alias")  # a second name for the same folder
    with Store(tmp_path / "c.db") as s:
        summary = index_archive(s, [root])
        paths = [r["path"] for r in s.images()]
    assert summary.seen == 5 and len(paths) == 5, paths
    assert sorted(os.path.basename(p) for p in paths) == ["0.png", "1.png", "2.png", "3.png", "s.png"]


# -- damaged JPEG data ending with its end marker ----------------------------------------------------
def _jpeg_cut_middle() -> bytes:
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (5, 5), 0)
    ok = cv2.imencode(".jpg", img)[1].tobytes()
    n = len(ok)
    cut = ok[: n // 3] + ok[2 * n // 3 :]
    assert cut.endswith(b"\xff\xd9")
    return cut


def test_jpeg_with_its_middle_cut_out_is_truncated(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(_jpeg_cut_middle())
    with pytest.raises(UnreadableImage) as info:
        io_mod.inspect_image(path)
    assert info.value.reason == "truncated" and "premature end" in info.value.detail


# -- a file name that is not UTF-8, in a batch with a damaged JPEG; later commands ---------------------
@pytest.mark.slow
def test_non_utf8_name_and_cut_jpeg_do_not_stop_the_batch(tmp_path):
    """The batch of 512 is written whole; the bad name and the cut JPEG are recorded; mine and status run.

    Before the fix the non-UTF-8 name stopped ``index`` (rc 2) and rolled back the batch,
    and the cut JPEG was indexed and scored.
    """
    root = tmp_path / "arch"
    root.mkdir()
    for i in range(6):
        _good(root, f"g{i}.png", seed=i)
    bad_name = os.path.join(os.fsencode(root), b"caf\xe9.png")
    with open(bad_name, "wb") as fh:
        fh.write(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    (root / "cut.jpg").write_bytes(_jpeg_cut_middle())
    db = tmp_path / "c.db"
    res = _cli("index", str(root), "--db", str(db), timeout=90)
    assert res["rc"] == 0, res["stderr"]
    assert "unreadable: bad_filename 1, truncated 1" in res["stdout"]
    rows = _rows(db)
    assert [n for n, r in rows.items() if r["status"] == "ok"] == [f"g{i}.png" for i in range(6)]
    assert rows["caf\\xe9.png"]["reason"] == "bad_filename" and "UTF-8" in rows["caf\\xe9.png"]["detail"]
    assert rows["cut.jpg"]["reason"] == "truncated"
    # a rerun finds everything unchanged, the bad name included
    res = _cli("index", str(root), "--db", str(db), timeout=90)
    assert res["rc"] == 0 and "0 new, 0 changed, 8 unchanged" in res["stdout"], res
    # later commands are not broken by the row, and only readable images get scores
    res = _cli("mine", "--db", str(db), "--scorers", "contrast", timeout=120)
    assert res["rc"] == 0, res["stderr"]
    with Store(db) as s:
        scored = {
            os.path.basename(r[0]) for r in s.query("SELECT i.path FROM scores c JOIN images i ON i.id = c.image_id")
        }
    assert scored == {f"g{i}.png" for i in range(6)}
    res = _cli("status", "--db", str(db), "--json", timeout=60)
    assert res["rc"] == 0 and json.loads(res["stdout"])["unreadable_reasons"] == {"bad_filename": 1, "truncated": 1}


def test_non_utf8_root_is_refused_with_its_name(tmp_path):
    root = os.path.join(os.fsencode(tmp_path), b"arch\xff")
    os.mkdir(root)
    res = _cli("index", os.fsdecode(root), "--db", str(tmp_path / "c.db"), timeout=60)
    assert res["rc"] == 2 and "arch\\xff" in res["stderr"] and "not valid UTF-8" in res["stderr"], res


def test_decode_bytes_of_a_bomb_never_reaches_opencv(monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("OpenCV was asked to decode a bomb")

    monkeypatch.setattr(io_mod.cv2, "imdecode", no_decode)
    for ext, make in BOMBS.items():
        with pytest.raises(UnreadableImage, match="too_large"):
            decode_bytes(f"x.{ext}", make(BOMB_SIDE, BOMB_SIDE))
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 4), np.uint8))
    assert decode_bytes("x.npy", buf.getvalue()).shape == (4, 4)
