"""The catalogue: the SQLite database of an archive and what is kept beside it."""
