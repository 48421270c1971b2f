"""Side-by-side baselines run by `make bench` (`python -m benchmarks`); not installed with dialoglab."""
