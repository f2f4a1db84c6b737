"""``raremine mine``: run the scorers over the catalogue (:func:`mining.job.mine.mine`)."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from raremine.cli._options import ConfigOpt, DbOpt, SetOpt
from raremine.cli._util import EXIT_BUSY, app, fail, load_config_or_fail, open_store


@app.command()
def mine(
    db: DbOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    scorers: Annotated[str | None, typer.Option(help="comma-separated scorer names (default: mine.scorers)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (mine.workers)")] = None,
    backend: Annotated[str | None, typer.Option(help="inline, process or dask (mine.backend)")] = None,
    scheduler: Annotated[str | None, typer.Option(help="existing dask scheduler tcp://HOST:PORT")] = None,
    dask_local: Annotated[int | None, typer.Option(help="start a dask LocalCluster of N workers")] = None,
    shard_size: Annotated[int | None, typer.Option(help="images per shard (mine.shard_size)")] = None,
    rescore: Annotated[bool, typer.Option(help="score again what already has scores")] = False,
    log_json: Annotated[Path | None, typer.Option(help="append structured logs (JSON lines) to this file")] = None,
) -> None:
    """Run the configured scorers over every readable image; resumable (run it again after a kill)."""
    from mining.catalogue.joblog import exit_code, json_log_handler
    from mining.config import scorer_params
    from mining.job.mine import CatalogueBusy
    from mining.job.mine import mine as mine_fn
    from mining.scorers import get_scorer, resolve_scorers

    if scheduler is not None and dask_local is not None:
        fail("give either --scheduler (an existing cluster) or --dask-local N (a local one), not both")
    overrides = list(set_ or [])
    if scorers is not None:
        overrides.append(f"mine.scorers=[{scorers}]")
    if backend is not None:
        overrides.append(f"mine.backend={backend}")
    if scheduler is not None or dask_local is not None:
        overrides.append("mine.backend=dask")
    if scheduler is not None:
        overrides.append(f"mine.scheduler={scheduler}")
    if dask_local is not None:
        overrides.append(f"mine.workers={dask_local}")
    if workers is not None:
        overrides.append(f"mine.workers={workers}")
    if shard_size is not None:
        overrides.append(f"mine.shard_size={shard_size}")
    if rescore:
        overrides.append("mine.rescore=true")
    cfg = load_config_or_fail(config, overrides)
    mc = cfg.mine
    if not db.exists():
        fail(f"catalogue {str(db)!r} does not exist: run `raremine index ROOT --db {db}` first")
    with open_store(db) as probe:
        names = resolve_scorers(mc.scorers, probe)
    try:
        objs = [get_scorer(n, **scorer_params(cfg, n)) for n in names]
    except ValueError as err:
        fail(str(err))
    root = logging.getLogger()
    for h in root.handlers:  # the console keeps its level (dask's INFO logs and --log-json stay off it)
        if h.level == logging.NOTSET:
            h.setLevel(root.level)
    handler = json_log_handler(log_json) if log_json is not None else None
    try:
        with open_store(db) as store, mine_progress() as cb:
            try:
                s = mine_fn(
                    store,
                    objs,
                    backend=mc.backend,
                    workers=mc.workers,
                    shard_size=mc.shard_size,
                    save_maps=mc.save_maps,
                    max_pixels=cfg.index.max_pixels,
                    rescore=mc.rescore,
                    scheduler=mc.scheduler,
                    max_in_flight=mc.max_in_flight,
                    retries=mc.retries,
                    start_method=mc.start_method,
                    config=cfg.model_dump(mode="json"),
                    progress=cb,
                )
            except ValueError as err:
                fail(str(err))
            except CatalogueBusy as err:
                fail(str(err), code=EXIT_BUSY)
            finally:
                if handler is not None:
                    logging.getLogger("mining").removeHandler(handler)
                    handler.close()
    except KeyboardInterrupt as err:  # mine recorded the run as interrupted and said how to resume
        typer.secho(f"interrupted ({err or 'Ctrl+C'}): run the same command again to resume", err=True)
        raise typer.Exit(exit_code(err)) from None
    failed = ", ".join(f"{k} {v}" for k, v in sorted(s.failed.items())) or "none"
    rate = f"{s.done / s.timings['stream_s']:.1f} img/s" if s.done and s.timings.get("stream_s") else "-"
    typer.echo(
        f"run {s.run_id}: mined {s.done} images with {', '.join(names)} on {s.backend} "
        f"({s.workers} workers) in {s.seconds:.1f}s ({rate}); skipped {s.skipped} already scored, "
        f"{s.skipped_failed} failed before; failed: {failed}"
        + (f"; {s.maps_retried} images scored again to write maps missing before" if s.maps_retried else "")
        + (f"; maps not written: {s.maps_unwritable} (scores kept; see the warning)" if s.maps_unwritable else "")
    )


@contextmanager
def mine_progress():
    """A tqdm bar (images/s, ETA) driven by mine's ``progress(processed, total)`` callback."""
    from tqdm import tqdm

    bar = tqdm(desc="mine", unit="img", dynamic_ncols=True, disable=None, file=sys.stderr, smoothing=0.1)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
