"""tests/hostile is cross-cutting on purpose, so it does not mirror the package: each file
attacks the backend from outside (hostile configs, fuzzed function-API calls, malformed Erlang
frames, hostile wasm guests, floods, leaks) through whichever edge the attack comes in by, and
checks what the whole stack does with it. It needs no fixtures of its own; tests/conftest.py
serves it."""
