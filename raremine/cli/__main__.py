"""``python -m raremine.cli``: the ``raremine`` command."""

from raremine.cli import main

if __name__ == "__main__":
    main()
