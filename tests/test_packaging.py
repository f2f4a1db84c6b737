"""The wheel holds what `raremine review` needs: the app module and its browser components."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_review_app_and_its_components(tmp_path):
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    r = subprocess.run(
        [*pip_wheel, "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        pytest.skip(f"no wheel could be built here: {r.stderr[-500:]}")
    (wheel,) = tmp_path.glob("raremine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "raremine/app.py",
        "raremine/review_ui/viewer.js",
        "raremine/review_ui/keys.js",
        "raremine/review_ui/host.js",
    } <= names
    assert "raremine/review_ui/viewer.css" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
