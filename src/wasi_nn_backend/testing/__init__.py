"""Helpers for tests and benchmarks (need the ``test`` extra: gguf); nothing at run time imports them."""
