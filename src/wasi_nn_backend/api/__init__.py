"""The Python API: Backend -> Graph -> Session, and the WASI-NN execution context on a session.

The Backend owns every handle and every lifetime; the edges (wasi_nn, adapters/) call it."""
