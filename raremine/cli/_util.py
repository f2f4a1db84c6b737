"""What every command shares: the typer app, exit codes, opening the catalogue and the config, progress bars.

The options several commands take are in :mod:`raremine.cli._options`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    name="raremine",
    help="Find rare defects in large unlabeled image archives, review them, learn, synthesize.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("raremine")
T = TypeVar("T")

#: exit status of ``mine`` when another mine job holds the catalogue
EXIT_BUSY = 3


def fail(message: str, code: int = 2) -> None:
    """Print an error and exit (2 = bad usage)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def load_config_or_fail(config: Path | None, overrides: list[str] | None):
    """Load and validate the config, exiting 2 with the message on error."""
    from mining.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as err:
        fail(str(err))


#: The catalogue the running command opened last (named when SQLite fails later on).
_CATALOGUE: list[Path] = []


def open_store(db: Path, *, must_exist: bool = True, readonly: bool = False, snapshot: bool = False):
    """Open the catalogue, exiting 2 with a clear message when it cannot be.

    Parameters
    ----------
    db : Path
        The catalogue file.
    must_exist : bool
        Refuse a missing file (otherwise a new catalogue is created; never with ``readonly``).
    readonly : bool
        Open for reading only: nothing is written, no file is created.
    snapshot : bool
        With ``readonly``: read an idle catalogue as a snapshot (see :class:`mining.catalogue.store.Store`).
    """
    import sqlite3

    from mining.catalogue.store import SchemaVersionError, Store, describe_sqlite_error

    _CATALOGUE[:] = [db]
    if (must_exist or readonly) and not db.exists():
        fail(f"catalogue {str(db)!r} does not exist: run `raremine index ROOT --db {db}` first")
    try:
        return Store(db, readonly=readonly, snapshot=snapshot)
    except (SchemaVersionError, ValueError) as err:
        fail(str(err))
    except sqlite3.Error as err:
        fail(describe_sqlite_error(db, err))
    except OSError as err:
        fail(f"catalogue {str(db)!r} cannot be opened: {err.strerror or err}")


def read_catalogue(db: Path, work: Callable[[Any], T]) -> T:
    """Run ``work(store)`` on a read-only catalogue without writing anything, not even a -wal or -shm file.

    An idle catalogue is read as a snapshot; should a writer change the file
    meanwhile, the work is done again on a live read-only connection.
    """
    with open_store(db, readonly=True, snapshot=True) as store:
        result = work(store)
        again = store.snapshot_changed()
    if again:
        log.info("catalogue %s changed while it was read; reading it again", db)
        with open_store(db, readonly=True) as store:
            result = work(store)
    return result


@contextmanager
def progress_bar(desc: str, unit: str = "img"):
    """A tqdm bar driven by a ``progress(done, total)`` callback."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True, disable=None, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
