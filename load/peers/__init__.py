"""Real serving systems `python -m load.bench --peers` measures mtc against.

`systems.py` says how each peer is installed, started, asked and answered, `correctness.py`
checks their answers; both run in mtc's virtualenv. The `*_sentiment.py` server files run in
each peer's own virtualenv and import nothing from this package.
"""
