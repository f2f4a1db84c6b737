"""The options several commands take (typer annotations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DbOpt = Annotated[Path, typer.Option("--db", help="catalogue file (SQLite)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: section.key=value")]
LabelFormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="label format: csv, folders, masks, coco, yolo, voc, labelme; cvat (import only)"),
]
ClassesOpt = Annotated[Path | None, typer.Option(help="class map file (classes.json, classes.txt, data.yaml)")]
