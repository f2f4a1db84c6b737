"""``raremine review``: run the review app (:mod:`raremine.app`) for a catalogue."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from raremine.cli._options import ConfigOpt, DbOpt
from raremine.cli._util import app, fail, load_config_or_fail, read_catalogue


@app.command()
def review(
    db: DbOpt,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8501,
    config: ConfigOpt = None,
    address: Annotated[str, typer.Option(help="address to bind (loopback unless told otherwise)")] = "127.0.0.1",
) -> None:
    """Run the review app for a catalogue (Streamlit, headless, in the foreground until stopped)."""
    app_file = Path(__file__).resolve().parents[1] / "app.py"  # raremine/app.py, shipped in the wheel
    if not app_file.is_file():
        fail(f"the review app {str(app_file)!r} is missing from this installation")
    read_catalogue(db, lambda store: None)  # refuses a missing, foreign, damaged or other-version file
    load_config_or_fail(config, None)
    if not 0 < port < 65536:
        fail(f"--port must be in 1..65535; got {port}")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_file),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--",
        "--db",
        str(db.resolve()),
    ]
    if config is not None:
        cmd += ["--config", str(config.resolve())]
    typer.echo(f"review app for {db} on http://{address}:{port} (Ctrl+C stops it)")
    sys.stdout.flush()
    # become the server (no child left behind when this process is stopped)
    os.execv(cmd[0], cmd)
