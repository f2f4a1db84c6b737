"""Bad inputs through the command line (reliability issue, item 9), each in a subprocess.

Every case: exit code 2, one ``error:`` line on stderr naming the file, key or
value and what is allowed, no traceback. Read-only commands (``status``,
``export``) change nothing: the catalogue keeps its bytes, no -wal or -shm file
is left beside it, a missing file is not created, and a catalogue in a
read-only folder can still be read.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_python

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd: Path, preexec_fn=None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return run_python(["-m", "raremine.cli", *map(str, args)], cwd=cwd, env=env, timeout=timeout, preexec_fn=preexec_fn)


def _assert_clean_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error:") or "\nerror:" in res.stderr, res.stderr
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


def _fill(args: list[str], **values) -> list[str]:
    """Replace ``{name}`` placeholders (not str.format: values such as ``{contrast`` stay as they are)."""
    out = []
    for a in args:
        for k, v in values.items():
            a = a.replace("{" + k + "}", str(v))
        out.append(a)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A mined catalogue and every kind of bad catalogue, config and model file, made once."""
    d = tmp_path_factory.mktemp("faults_cli")
    arch = d / "archive"
    arch.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(arch / f"i{i}.png")
    cat = d / "good.db"
    for args in (("index", arch, "--db", cat), ("mine", "--db", cat, "--backend", "inline")):
        res = _cli(*args, cwd=d)
        assert res.returncode == 0, res.stderr
    f = {"dir": d, "archive": arch, "good": cat}
    f["folder"] = d / "folder.db"
    f["folder"].mkdir()
    f["garbage"] = d / "garbage.db"
    f["garbage"].write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    f["truncated"] = d / "truncated.db"
    f["truncated"].write_bytes(cat.read_bytes()[:8192])
    f["damaged"] = d / "damaged.db"  # page 1 intact (it opens), later pages overwritten
    data = bytearray(cat.read_bytes())
    data[3 * 4096 : 23 * 4096] = b"\xff" * (20 * 4096)
    f["damaged"].write_bytes(bytes(data))
    f["foreign"] = d / "foreign.db"
    con = sqlite3.connect(f["foreign"])
    con.execute("CREATE TABLE notes (x)")
    con.commit()
    con.close()
    f["empty"] = d / "empty.db"
    f["empty"].write_bytes(b"")
    f["missing"] = d / "missing.db"
    f["latin1"] = d / "latin1.yaml"
    f["latin1"].write_bytes("mine:\n  scorers: [contrast]  # café\n".encode("latin-1"))
    f["garbage.pth"] = d / "garbage.pth"
    f["garbage.pth"].write_bytes(b"\x00not a torch file" * 100)
    (d / "w").mkdir()
    f["cut_torchvision"] = d / "w" / "mobilenet_v2-b0353104.pth"  # torchvision's name, other bytes
    f["cut_torchvision"].write_bytes(b"PK\x03\x04" + b"\x00" * 1000)
    return f


# -- bad catalogues, every command ----------------------------------------------------------------
COMMANDS = {
    "status": ["status"],
    "export-scores": ["export", "--what", "scores", "--out", "out.csv"],
    "export-labels": ["export", "--what", "labels", "--format", "csv", "--out", "labels_out"],
    "rank": ["rank"],
    "learn": ["learn"],
    "mine": ["mine", "--backend", "inline"],
    "import": ["import", "{archive}", "--format", "folders"],
    "index": ["index", "{archive}"],
    "review": ["review"],
    "simulate": ["simulate", "--truth", "truth.csv", "--out", "sim_out"],
}
BAD_CATALOGUES = {
    "folder": ("is a folder",),
    "garbage": ("not an SQLite database",),
    "truncated": ("is damaged", "PRAGMA integrity_check", "backup"),
    "damaged": ("is damaged", "PRAGMA integrity_check", "backup"),
    "foreign": ("another program",),
    "missing": ("does not exist",),
}


#: every command with the faults that reach furthest (a folder; a file that opens but is damaged inside),
#: and the read-only and main writing commands with every fault
CATALOGUE_CASES = sorted(
    {(c, k) for c in COMMANDS for k in ("folder", "damaged")}
    | {
        (c, k)
        for c in ("status", "export-scores", "mine", "index")
        for k in BAD_CATALOGUES
        if (c, k) != ("index", "missing")
    }
)


@pytest.mark.parametrize(("command", "kind"), CATALOGUE_CASES)
def test_bad_catalogue_is_a_clear_error(files, command, kind):
    db = files[kind]
    res = _cli(*_fill(COMMANDS[command], archive=files["archive"]), "--db", db, cwd=files["dir"])
    _assert_clean_error(res, db.name, *BAD_CATALOGUES[kind])


# -- bad configs and overrides --------------------------------------------------------------------
CONFIG_CASES = {
    "not-utf8": (["mine", "-c", "{latin1}"], ("latin1.yaml", "UTF-8")),
    "not-utf8-export": (["export", "--what", "scores", "--out", "o.csv", "-c", "{latin1}"], ("latin1.yaml", "UTF-8")),
    "set-not-yaml": (
        ["mine", "--set", "mine.scorers=[contrast"],
        ("mine.scorers", "'[contrast'", "allowed", "[a, b]"),
    ),
    "set-not-yaml-rank": (["rank", "--set", "rank.weights={contrast"], ("rank.weights", "'{contrast'", "allowed")),
    "scorer-argument": (
        ["mine", "--set", "scorers.contrast.bordr=3"],
        ("scorers.contrast.bordr", "did you mean 'border'", "smooth_sigma"),
    ),
    "typed-scorer-section": (["mine", "--set", "autoencoder.foo=1"], ("autoencoder.foo", "latent_channels")),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_a_clear_error(files, case):
    args, needles = CONFIG_CASES[case]
    args = _fill(args, latin1=files["latin1"])
    res = _cli(*args, "--db", files["good"], cwd=files["dir"])
    _assert_clean_error(res, *needles)


# -- refused model files ---------------------------------------------------------------------------
MODEL_CASES = {
    "backbone-missing": ("backbone", "backbone.weights={dir}/nofile.pth", ("nofile.pth", "no such file")),
    "backbone-not-torch": ("backbone", "backbone.weights={garbage.pth}", ("garbage.pth", "state_dict")),
    "backbone-sha256": ("backbone", "backbone.weights={cut_torchvision}", ("mobilenet_v2-b0353104.pth", "SHA-256")),
    "autoencoder-missing": ("autoencoder", "autoencoder.weights={dir}/nofile.pt", ("nofile.pt", "no such file")),
    "autoencoder-not-torch": ("autoencoder", "autoencoder.weights={garbage.pth}", ("garbage.pth", "state_dict")),
    "pixel-missing": ("pixel", "scorers.pixel.model={dir}/nofile.json", ("nofile.json", "does not exist")),
    "pixel-not-json": ("pixel", "scorers.pixel.model={garbage.pth}", ("garbage.pth", "JSON")),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_refused_model_file_is_a_clear_error(files, case):
    scorer, assignment, needles = MODEL_CASES[case]
    (assignment,) = _fill([assignment], **files)
    res = _cli(
        "mine", "--db", files["good"], "--scorers", scorer, "--backend", "inline", "--set", assignment, cwd=files["dir"]
    )
    _assert_clean_error(res, *needles)


# -- read-only commands write nothing ---------------------------------------------------------------
READ_ONLY = {
    "status": ["status"],
    "status-json": ["status", "--json"],
    "export-scores": ["export", "--what", "scores", "--out", "{out}/s.csv"],
    "export-labels": ["export", "--what", "labels", "--format", "csv", "--out", "{out}/labels"],
}


@pytest.mark.parametrize("kind", ["good", "foreign", "empty", "missing"])
@pytest.mark.parametrize("command", list(READ_ONLY))
def test_read_only_commands_leave_the_file_as_it_was(files, tmp_path, kind, command):
    db = tmp_path / "the.db"
    if kind != "missing":
        shutil.copy(files[kind], db)
    before = _digest(db) if db.exists() else None
    res = _cli(*_fill(READ_ONLY[command], out=tmp_path), "--db", db, cwd=tmp_path)
    if kind == "good":
        assert res.returncode == 0, res.stderr
    else:
        _assert_clean_error(res, "the.db")
    assert (_digest(db) if db.exists() else None) == before, "a read-only command changed the catalogue"
    assert _side_files(db) == [], "a read-only command left files beside the catalogue"


def test_read_only_command_with_a_writer_open(files, tmp_path):
    """With another connection open (its -wal and -shm there), status reads live and leaves them to it."""
    db = tmp_path / "the.db"
    shutil.copy(files["good"], db)
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
    writer.execute("DELETE FROM scores")
    writer.commit()
    try:
        res = _cli("status", "--json", "--db", db, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert '"scores": 0' in res.stdout  # the committed change still in the -wal is seen
    finally:
        writer.close()


# -- a catalogue in a read-only folder ------------------------------------------------------------------
def _drop_privileges() -> None:
    """In the child: give up what lets root ignore permission bits (or become nobody)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    if all(libc.prctl(pr_capbset_drop, c, 0, 0, 0) == 0 for c in (cap_dac_override, cap_dac_read_search)):
        return  # dropped from the bounding set: the exec'd python runs without them
    os.setgid(65534)
    os.setuid(65534)  # nobody


@pytest.fixture
def read_only_copy(files, tmp_path):
    """The catalogue in a folder that neither it nor its -wal/-shm can be written in (0o555, file 0o444)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "cat.db"
    shutil.copy(files["good"], db)

    def lock(extra: dict[str, bytes] | None = None) -> Path:
        for name, data in (extra or {}).items():
            (folder / name).write_bytes(data)
        for p in folder.iterdir():
            p.chmod(0o444)
        folder.chmod(0o555)
        probe = subprocess.run(
            [sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"],
            preexec_fn=_drop_privileges,
            capture_output=True,
        )
        if probe.returncode == 0:
            pytest.skip("cannot make a folder read-only for a child process here (root that keeps its privileges)")
        return db

    yield lock
    folder.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("wal", ["none", "empty"])
@pytest.mark.parametrize("command", list(READ_ONLY))
def test_read_only_folder_is_readable(read_only_copy, tmp_path, wal, command):
    db = read_only_copy({"cat.db-wal": b""} if wal == "empty" else None)
    before, side = _digest(db), _side_files(db)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    res = _cli(*_fill(READ_ONLY[command], out=out), "--db", db, cwd=tmp_path, preexec_fn=_drop_privileges)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert (
        ("6 readable" in res.stdout or '"images_ok": 6' in res.stdout)
        if command.startswith("status")
        else ("wrote" in res.stdout)
    )
    assert _digest(db) == before and _side_files(db) == side


def test_read_only_folder_with_pending_wal_is_a_clear_error(read_only_copy, files, tmp_path):
    """Changes in a -wal that cannot be read without a -shm: refused, naming the -wal, not a snapshot without them."""
    src = tmp_path / "w.db"
    shutil.copy(files["good"], src)
    writer = sqlite3.connect(src)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
    writer.commit()
    main, wal = src.read_bytes(), (tmp_path / "w.db-wal").read_bytes()
    writer.close()
    assert wal, "the writer left no -wal content to test with"
    db = read_only_copy({"cat.db": main, "cat.db-wal": wal})
    res = _cli("status", "--db", db, cwd=tmp_path, preexec_fn=_drop_privileges)
    _assert_clean_error(res, "cat.db", "-wal", "write access")


def test_snapshot_notices_a_writer(files, tmp_path):
    """An idle catalogue is read as a snapshot (no side files); a writer's checkpoint meanwhile is noticed."""
    from mining.catalogue.store import Store

    db = tmp_path / "the.db"
    shutil.copy(files["good"], db)
    ro = Store(db, readonly=True, snapshot=True)
    assert ro.immutable and not ro.snapshot_changed() and _side_files(db) == []
    with Store(db) as writer:
        writer.con.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
    assert ro.snapshot_changed()
    ro.close()
    with Store(db, readonly=True) as live:  # a live reader is never stale
        assert not live.immutable and not live.snapshot_changed()
