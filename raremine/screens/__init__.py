"""The review app's screens, one module each (:mod:`raremine.app` builds the page from them).

:mod:`~raremine.screens.state` holds what they share (constants, cached images, actions on
the queue, the page context); :mod:`~raremine.screens.loop` the loop's background jobs
(learn, rank the next round). Streamlit is imported here, never in :mod:`mining`.
"""
