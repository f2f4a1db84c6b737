"""Preloaded by the forkserver of :func:`mining.mine.mine`'s process pool, and only there.

Importing it makes the importing process die (SIGKILL) when its parent, the
mining job, ends, however it ends (``kill -9`` included). Its workers, forked
from it, set the same for themselves (:func:`mining.mine.die_with_parent`), so
nothing of a killed job is left running. Do not import it elsewhere.
"""

from mining.job.worker import die_with_parent

die_with_parent()
