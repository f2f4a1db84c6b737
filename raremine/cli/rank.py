"""``raremine rank``: choose the next round of candidates (:func:`mining.ranking.rank.rank`)."""

from __future__ import annotations

from typing import Annotated

import typer

from raremine.cli._options import ConfigOpt, DbOpt, SetOpt
from raremine.cli._util import app, fail, load_config_or_fail, open_store


@app.command("rank")
def rank_cmd(
    db: DbOpt,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="top, least_confidence, entropy, margin, random, diversity, balanced, or a mixture "
            "such as top:0.8,least_confidence:0.2"
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="candidates in the round")] = None,
    seed: Annotated[int, typer.Option(help="seed of the random parts of a strategy")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Choose the next round of candidates for review."""
    from mining.ranking.rank import rank

    cfg = load_config_or_fail(config, set_)
    with open_store(db) as store:
        try:
            r = rank(
                store,
                strategy=strategy or cfg.rank.strategy,
                n=n or cfg.rank.n,
                weights=cfg.rank.weights,
                primary=cfg.rank.primary,
                fusion=cfg.rank.fusion,
                random_state=seed,
                per_category=cfg.learn.per_category,
                cold_start=cfg.learn.cold_start,
            )
        except ValueError as err:
            fail(str(err))
        rows = store.candidates(r)
    typer.echo(f"round {r}: {len(rows)} candidates")
    for c in rows:
        typer.echo(f"  {c['rank']:>3}  {c['score']:.3f}  {c['strategy']:<16} {c['path']}")
