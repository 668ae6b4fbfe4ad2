"""Benchmarks: scripts that measure nas_gym (run with ``python -m nas_gym.experiments.benchmarks.<name>``)."""
