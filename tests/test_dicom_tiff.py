"""DICOM and TIFF stacks (issue 22): 16-bit pixels, rescale, windows, volumes, metadata, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mining.catalogue.index import index_archive, volumes
from mining.catalogue.store import Store
from mining.io import UnreadableImage, inspect_image, read_image, to_float_gray

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)


def write_dicom(path: Path, pixels: np.ndarray, *, compress: str | None = None, **attrs) -> Path:
    """A CT DICOM file written with pydicom: 16-bit, MONOCHROME2, frames when ``pixels`` is 3-D."""
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CTImageStorage
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, fm.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if compress == "rle":
        ds.compress(RLELossless)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def ct_slice(rng, h=40, w=48) -> np.ndarray:
    """Stored CT values (uint16, 0..4095): air, a body and a bright spot."""
    img = np.full((h, w), 24, np.uint16)
    img[5:-5, 6:-6] = 1064 + rng.integers(-20, 20, (h - 10, w - 12)).astype(np.uint16)
    img[15:19, 20:24] = 3000
    return img


def test_16_bit_dicom_with_rescale_keeps_hounsfield_units_and_its_window(tmp_path):
    rng = np.random.default_rng(0)
    stored = ct_slice(rng)
    p = write_dicom(
        tmp_path / "ct.dcm",
        stored,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
        BodyPartExamined="CHEST",
        AcquisitionDateTime="20260314093015",
    )
    img = read_image(p)
    assert img.dtype == np.int16 and np.array_equal(img, stored.astype(np.int32) - 1024)  # HU, not 8-bit
    assert img.min() == -1000 and img.max() == 1976
    info = inspect_image(p)
    assert (info.width, info.height, info.frames, info.dtype) == (48, 40, 1, "int16")
    assert info.meta["window_center"] == "40" and info.meta["window_width"] == "400"
    assert info.meta["modality"] == "CT" and info.meta["body_part"] == "CHEST"
    assert info.meta["acquisition_time"] == "2026-03-14T09:30:15" and info.meta["acquisition_date"] == "2026-03-14"
    g = to_float_gray(img)  # scoring sees every grey level (signed: min-max per image)
    assert len(np.unique(g)) == len(np.unique(img))


def test_dicom_without_rescale_stays_uint16_and_a_fractional_slope_gives_float(tmp_path):
    stored = ct_slice(np.random.default_rng(1)) * 10 + 1  # odd values up to 30001
    assert read_image(write_dicom(tmp_path / "raw.dcm", stored)).dtype == np.uint16
    assert np.array_equal(read_image(tmp_path / "raw.dcm"), stored)
    img = read_image(write_dicom(tmp_path / "half.dcm", stored, RescaleSlope=0.5, RescaleIntercept=0))
    assert img.dtype == np.float32 and np.allclose(img, stored * 0.5)  # halves of odd numbers: not integers
    img = read_image(write_dicom(tmp_path / "thrice.dcm", stored, RescaleSlope=3, RescaleIntercept=0))
    assert img.dtype == np.int32 and np.array_equal(img, stored.astype(np.int32) * 3)  # 90003: past 16 bits, exact


def test_rle_compressed_dicom_decodes_and_jpeg_lossless_is_unsupported_with_a_reason(tmp_path):
    stored = ct_slice(np.random.default_rng(2))
    assert np.array_equal(read_image(write_dicom(tmp_path / "rle.dcm", stored, compress="rle")), stored)
    p = write_dicom(tmp_path / "jpll.dcm", stored)
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8not really jpeg\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(p, enforce_file_format=True)
    with pytest.raises(UnreadableImage) as e:
        read_image(p)
    assert e.value.reason == "unsupported" and "JPEG Lossless" in e.value.detail and "pylibjpeg" in e.value.detail


def test_jpeg_baseline_dicom_decodes_through_pillow(tmp_path):
    """An 8-bit JPEG baseline DICOM (a compressed syntax pydicom reads through Pillow) indexes."""
    import io

    from PIL import Image
    from pydicom.uid import JPEGBaseline8Bit

    img = np.zeros((40, 48), np.uint8)
    img[10:30, 12:36] = 200
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=100)
    p = write_dicom(tmp_path / "jpeg.dcm", img.astype(np.uint16))
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = pydicom.encaps.encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(p, enforce_file_format=True)
    got = read_image(p)
    assert got.dtype == np.uint8 and got.shape == (40, 48) and np.abs(got.astype(int) - img).max() <= 3


def test_multi_frame_dicom_and_tiff_stacks_are_volumes_of_slices(tmp_path):
    rng = np.random.default_rng(3)
    frames = np.stack([ct_slice(rng) for _ in range(5)])
    frames[3, 30:34, 10:14] = 4000  # a defect in slice 3 only
    arch = tmp_path / "arch"
    arch.mkdir()
    write_dicom(arch / "volume.dcm", frames, WindowCenter=1064, WindowWidth=800, SeriesInstanceUID=generate_uid())
    tifffile.imwrite(arch / "stack.tif", frames, photometric="minisblack")
    tifffile.imwrite(arch / "big.tif", frames[0], bigtiff=True, photometric="minisblack")
    for name in ("volume.dcm", "stack.tif"):
        img = read_image(arch / name)
        assert img.shape == (5 * 40, 48) and img.dtype == np.uint16
        assert np.array_equal(img[3 * 40 : 4 * 40], frames[3])
        assert inspect_image(arch / name).frames == 5
    assert np.array_equal(read_image(arch / "big.tif"), frames[0])
    with Store(tmp_path / "c.db") as store:
        s = index_archive(store, [str(arch)], workers=1)
        assert s.new == 3 and not s.unreadable and s.tiled == 2
        ids = {os.path.basename(r["path"]): int(r["id"]) for r in store.images()}
        for name in ("volume.dcm", "stack.tif"):
            tiles = store.tiles(ids[name])
            assert [t[1] for t in tiles] == [0, 40, 80, 120, 160] and all(t[3:] == (40, 48) for t in tiles)
        vols = volumes(store)
        assert len(vols) == 2 and all(len(v) == 5 for v in vols.values())
        from mining.job.mine import mine
        from mining.scorers import get_scorer

        mine(store, [get_scorer("contrast")], backend="inline", save_maps=False)
        per_tile = {
            r["tile"]: r["score"]
            for r in store.query(
                "SELECT tile, score FROM scores WHERE image_id = ? AND tile >= 0", (ids["volume.dcm"],)
            )
        }
        assert sorted(per_tile) == [0, 1, 2, 3, 4] and max(per_tile, key=per_tile.get) == 3  # the slice with the defect


def test_a_ct_series_of_files_indexes_as_one_volume_in_slice_order(tmp_path):
    rng = np.random.default_rng(4)
    series, arch = generate_uid(), tmp_path / "series"
    arch.mkdir()
    z = [30.0, -10.0, 10.0, 0.0, 20.0]  # file order is not slice order
    for k, zk in enumerate(z):
        write_dicom(
            arch / f"IM{k:04d}.dcm",
            ct_slice(rng),
            SeriesInstanceUID=series,
            InstanceNumber=k + 1,
            ImagePositionPatient=[0, 0, zk],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            RescaleSlope=1,
            RescaleIntercept=-1024,
            BodyPartExamined="ABDOMEN",
        )
    write_dicom(arch / "other.dcm", ct_slice(rng), SeriesInstanceUID=generate_uid())  # a series of one: no volume
    with Store(tmp_path / "c.db") as store:
        index_archive(store, [str(arch)], workers=1)
        by_id = {int(r["id"]): os.path.basename(r["path"]) for r in store.images()}
        (vol,) = volumes(store).values()
        assert [by_id[i] for i, _ in vol] == ["IM0001.dcm", "IM0003.dcm", "IM0002.dcm", "IM0004.dcm", "IM0000.dcm"]
        meta = dict(store.query("SELECT key, value FROM image_meta WHERE image_id = ?", (vol[0][0],)))
        assert meta["volume"] == series and meta["volume_slices"] == "5" and meta["slice_index"] == "0"
        from mining.learning.slices import read_metadata

        _, m = read_metadata(store)
        assert "modality" in m and "body_part" in m and "volume" in m
        assert "window_center" not in m and "slice_index" not in m  # how to show pixels is not a slice


def test_bad_dicom_and_tiff_files_get_reasons_and_the_batch_goes_on(tmp_path):
    arch = tmp_path / "arch"
    arch.mkdir()
    good = write_dicom(arch / "good.dcm", ct_slice(np.random.default_rng(5)))
    data = good.read_bytes()
    (arch / "cut.dcm").write_bytes(data[:-500])  # pixel data cut short
    (arch / "noheader.dcm").write_bytes(b"\x00" * 200)  # no DICM marker
    (arch / "garbage.dcm").write_bytes(data[:132] + np.random.default_rng(6).bytes(300))  # DICM, then noise
    report = Dataset()  # a DICOM dataset without an image (e.g. a structured report)
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID = generate_uid()
    pydicom.dcmwrite(arch / "report.dcm", report, enforce_file_format=True)
    (arch / "empty.dcm").write_bytes(b"")
    (arch / "cut.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    with Store(tmp_path / "c.db") as store:
        s = index_archive(store, [str(arch)], workers=1)
        rows = {os.path.basename(r["path"]): (r["status"], r["reason"], r["detail"]) for r in store.images(None)}
    assert rows["good.dcm"][0] == "ok"
    assert rows["cut.dcm"][1] == "truncated" and "less than expected" in rows["cut.dcm"][2]
    assert rows["noheader.dcm"][1] == "not_an_image" and "DICM" in rows["noheader.dcm"][2]
    assert rows["garbage.dcm"][1] in ("corrupt", "not_an_image", "truncated"), rows["garbage.dcm"]
    assert rows["empty.dcm"][1] == "empty"
    assert rows["report.dcm"][1] == "unsupported" and "no pixel data" in rows["report.dcm"][2]
    assert rows["cut.tif"][0] == "unreadable"
    assert s.new == 7 and sum(s.unreadable.values()) == 6


def test_a_16_bit_dicom_opens_in_the_review_app_with_its_own_window(tmp_path, monkeypatch):
    """Indexed, mined, ranked, then shown by app.py (AppTest) with the file's WindowCenter / WindowWidth."""
    from streamlit.testing.v1 import AppTest

    from mining import review as rv
    from mining.job.mine import mine
    from mining.ranking.rank import rank
    from mining.scorers import get_scorer

    rng = np.random.default_rng(7)
    arch = tmp_path / "arch"
    arch.mkdir()
    for k in range(3):
        write_dicom(
            arch / f"xr{k}.dcm",
            ct_slice(rng),
            RescaleSlope=1,
            RescaleIntercept=-1024,
            WindowCenter=40,
            WindowWidth=400,
            Modality="DX",
            PhotometricInterpretation="MONOCHROME2" if k else "MONOCHROME1",
        )
    db = tmp_path / "c.db"
    with Store(db) as store:
        index_archive(store, [str(arch)], workers=1)
        mine(store, [get_scorer("contrast")], backend="inline", save_maps=False)
        rank(store, n=3)
        items = rv.round_items(store)
        assert len(items) == 3
        win = rv.stored_window(store, items[0].image_id)
        inverted = os.path.basename(items[0].path) == "xr0.dcm"
        assert win is not None and (win["level"], win["width"], win["invert"]) == (40.0, 400.0, inverted)
        raw = read_image(items[0].path)
        shown = rv.display_image(raw, win["level"], win["width"], invert=win["invert"])
        # the body (stored 1064 +- 20, i.e. 40 +- 20 HU) is mid-grey in the 40/400 window, air is black (or white)
        body = shown[20, 10]
        assert 100 <= body <= 155 and shown[0, 0] == (255 if inverted else 0)
        assert not np.array_equal(shown, rv.display_image(raw))  # the automatic window would differ
    monkeypatch.setenv("RAREMINE_DB", str(db))
    monkeypatch.delenv("RAREMINE_CONFIG", raising=False)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.query_params["reviewer"] = "alice"
    at.run()
    assert not at.exception, at.exception
    assert any("DICOM window: level 40, width 400" in c.value for c in at.caption), [c.value for c in at.caption]
    at.checkbox(key="manual_window").check().run()
    assert at.slider(key="level").value == 40.0 and at.slider(key="width").value == 400.0
    assert at.slider(key="level").min == -32768.0  # int16 Hounsfield units, the 16-bit range kept


def test_the_cli_indexes_dicom_with_the_default_config(tmp_path):
    """``index.extensions`` defaults to the reader's list: the default config once left DICOM out."""
    from typer.testing import CliRunner

    from raremine.cli import app

    rng = np.random.default_rng(5)
    (tmp_path / "arch").mkdir()
    write_dicom(tmp_path / "arch" / "a.dcm", ct_slice(rng))
    write_dicom(tmp_path / "arch" / "b.dicom", ct_slice(rng))
    res = CliRunner().invoke(app, ["index", str(tmp_path / "arch"), "--db", str(tmp_path / "c.db")])
    assert res.exit_code == 0, res.output
    with Store(tmp_path / "c.db", readonly=True) as store:
        assert sorted(os.path.basename(r["path"]) for r in store.images()) == ["a.dcm", "b.dicom"]
