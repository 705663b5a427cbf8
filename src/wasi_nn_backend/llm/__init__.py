"""The llama.cpp layer: the only package that imports llama_cpp (its raw ctypes bindings).

One owner per C handle, each freed by an idempotent close(); Model.close() first closes the
contexts and samplers made from it. Nothing here imports core, engine or backend.
"""
