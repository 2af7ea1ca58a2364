"""The benchmark harness: conveyor and its peers, side by side on one Redis (`bench/run`).

Not part of the test suite; see bench/README.md.
"""
