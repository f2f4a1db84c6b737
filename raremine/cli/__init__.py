"""The ``raremine`` command line: a thin shell over the ``mining`` and ``synthesis`` libraries.

Each command parses its options, calls one library function and prints the
result. Bad usage exits 2 with a message; bad files never change the exit
code (they are recorded in the catalogue). ``mine`` exits 3 when another mine
job holds the catalogue; a job stopped by Ctrl+C or SIGTERM exits 130 or 143
(its run is recorded as ``interrupted``).

One module a command (or a group of them), as in spaCy's CLI: each registers its
command on the one :data:`app` (:mod:`raremine.cli._util`, with the options and
helpers they share), parses the options and calls one library function.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

# The command modules register their commands on `app` when imported; this order is `--help`'s.
# isort: off
from raremine.cli import catalogue, fit_pixel, mine, rank, learn, labels, simulate, synth, review, demo  # noqa: F401

# isort: on
from raremine.cli._util import _CATALOGUE, EXIT_BUSY, app, fail, log  # noqa: F401 (re-exported)


def main() -> None:
    """Console-script entry point.

    An SQLite error that escapes a command (a catalogue damaged beyond its
    first pages, a lock held too long) becomes one ``error:`` line naming the
    catalogue and what to do, with exit code 2, instead of a traceback.
    """
    import sqlite3

    try:
        app()
    except sqlite3.Error as err:
        from mining.catalogue.store import describe_sqlite_error

        log.debug("SQLite error", exc_info=True)
        where = _CATALOGUE[-1] if _CATALOGUE else Path("?")
        typer.secho(f"error: {describe_sqlite_error(where, err)}", err=True, fg=typer.colors.RED)
        sys.exit(2)
