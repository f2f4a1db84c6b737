"""The review app from a checkout: ``streamlit run app.py -- --db CATALOGUE``.

The app is the module :mod:`raremine.app`, shipped in the wheel with its
browser components (``raremine review`` runs it after ``pip install``).
Streamlit runs this file as ``__main__`` afresh on every rerun, and each run
builds the page with :func:`raremine.app.main`. The guard matters: Streamlit
leaves this script in ``sys.modules["__main__"]``, and ``multiprocessing``
re-imports it (as ``__mp_main__``) in every process it spawns afterwards.
"""

from raremine.app import main

if __name__ == "__main__":
    main()
