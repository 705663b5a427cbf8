"""Pure-Python core: session and request state, scheduling and KV decisions.

No llama_cpp, no threads, no I/O here: everything is testable without the shared library.
"""
