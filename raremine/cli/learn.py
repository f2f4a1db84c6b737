"""``raremine learn``: learn from the verdicts (:func:`mining.learning.learn.learn`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from raremine.cli._options import ConfigOpt, DbOpt, SetOpt
from raremine.cli._util import app, fail, load_config_or_fail, open_store, progress_bar


@app.command("learn")
def learn_cmd(
    db: DbOpt,
    calibration: Annotated[str | None, typer.Option(help="none, threshold, isotonic or sigmoid")] = None,
    folds: Annotated[int | None, typer.Option(help="folds for out-of-fold probabilities")] = None,
    pixel: Annotated[bool | None, typer.Option("--pixel/--no-pixel", help="retrain the pixel model")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Retrain the re-ranker (and the pixel model) from the verdicts; the next `rank` uses it."""
    from mining.learning.learn import learn

    overrides = list(set_ or [])
    if calibration is not None:
        overrides.append(f"learn.calibration={calibration}")
    if folds is not None:
        overrides.append(f"learn.n_folds={folds}")
    cfg = load_config_or_fail(config, overrides)
    with open_store(db) as store, progress_bar("learn", unit="step") as cb:
        try:
            rep = learn(
                store, config=cfg, pixel=pixel, random_state=seed, progress=lambda stage, done, total: cb(done, total)
            )
        except ValueError as err:
            fail(str(err))
    if as_json:
        typer.echo(json.dumps(rep.as_dict(), sort_keys=True, default=str))
        return
    typer.echo(f"verdicts: {rep.n_labelled} images ({rep.n_confirmed} confirmed, {rep.n_rejected} rejected)")
    if rep.reranker:
        rr = rep.reranker
        typer.echo(
            f"re-ranker: {rr['n_folds']} folds, {rr['n_features']} features, calibration "
            f"{rr['calibration']}; out-of-fold AP {rr['oof_ap']:.3f}, AUROC {rr['oof_auroc']:.3f}"
        )
    else:
        typer.echo(f"re-ranker not trained: {rep.reranker_skipped}")
    typer.echo(f"pixel model: {rep.pixel if rep.pixel else rep.pixel_skipped}")
