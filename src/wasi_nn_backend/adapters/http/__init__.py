"""The OpenAI-compatible HTTP server (``wasi-nn-backend serve``, the ``[server]`` extra):
Starlette on uvicorn, many clients batched together by the engine. An edge: it calls only the
API (and errors, config, logs). See README "HTTP server"."""
from .app import create_app
from .serve import load_models, parse_model_spec, serve

__all__ = ["create_app", "load_models", "parse_model_spec", "serve"]
