"""The benchmark (``make bench``): figures, baselines from the same run, and goals (docs/bench.md)."""
