"""The GoogLeNet benchmark: the layer table (layers.py) and `convkit bench` (runner.py)."""
