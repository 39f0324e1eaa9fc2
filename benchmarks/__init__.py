"""Benchmarks: modules run from the repository root as ``python -m benchmarks.<name>``."""
