"""The GoogLeNet benchmark: the layer table (layers.py) and `convkit bench` (cli.py, which lists
the other modules and the order they import each other in)."""
