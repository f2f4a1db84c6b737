"""raremine: find rare defects in large unlabeled image archives.

The libraries are the top-level packages ``mining`` and ``synthesis``; this
package holds only the command-line shell (``raremine.cli``).
"""

__version__ = "0.1.0"
