"""The folders kept beside a catalogue: ``<catalogue without extension>.<kind>``.

``<catalogue>.models`` holds its models, ``.maps`` the score-map overlays,
``.labels`` the label images painted in the review app (and imported ones),
``.masks`` the painted defect masks. One rule for every such folder.
"""

from __future__ import annotations

import os


def sidecar_dir(store_path: str | os.PathLike, kind: str) -> str:
    """The folder ``<catalogue without extension>.<kind>`` beside the catalogue ``store_path`` (absolute).

    Parameters
    ----------
    store_path : path
        The catalogue file.
    kind : str
        ``models``, ``maps``, ``labels`` or ``masks``.

    Returns
    -------
    str
    """
    base, _ = os.path.splitext(os.path.abspath(os.fspath(store_path)))
    return f"{base}.{kind}"


def models_dir(store_path: str | os.PathLike) -> str:
    """Folder beside a catalogue where its models are kept (``<catalogue stem>.models``)."""
    return sidecar_dir(store_path, "models")


def maps_dir(store_path: str | os.PathLike) -> str:
    """Folder beside a catalogue where overlay PNGs of its score maps are kept (``.maps``)."""
    return sidecar_dir(store_path, "maps")


def labels_dir(store_path: str | os.PathLike) -> str:
    """Folder beside a catalogue where label images painted in the app are saved (``.labels``)."""
    return sidecar_dir(store_path, "labels")


def masks_dir(store_path: str | os.PathLike) -> str:
    """Folder beside a catalogue where binary defect masks painted in the app are saved (``.masks``)."""
    return sidecar_dir(store_path, "masks")
