"""The engine: one thread per loaded model, the sole caller of llm/ for it."""
