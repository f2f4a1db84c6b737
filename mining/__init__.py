"""raremine.mining: index archives, score images, rank candidates, learn from verdicts.

A library: no printing, no Streamlit, no typer; ``logging`` and optional
progress callbacks only.
"""
