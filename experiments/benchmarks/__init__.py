"""Benchmarks: scripts that measure nas_gym (run with ``python -m experiments.benchmarks.<name>``)."""
