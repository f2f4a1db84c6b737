"""The review app from a checkout: ``streamlit run app.py -- --db CATALOGUE``.

The app is the module :mod:`raremine.app`, shipped in the wheel with its
browser components (``raremine review`` runs it after ``pip install``). This
file runs it afresh on every rerun, as Streamlit runs a script.
"""

import runpy
from pathlib import Path

import raremine

runpy.run_path(str(Path(raremine.__file__).resolve().parent / "app.py"), run_name="__main__")
