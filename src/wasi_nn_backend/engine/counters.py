"""Engine counters: written by the engine thread only, read anywhere (ints are atomic enough
for statistics)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class EngineCounters:
    steps: int = 0
    steady_steps: int = 0         # of those, the last decode again (no planning, same batch)
    prefill_tokens: int = 0
    decode_tokens: int = 0
    reused_tokens: int = 0
    shifts: int = 0
    evictions: int = 0
    offloads: int = 0             # KV sequences offloaded to host RAM
    restores: int = 0             # restored from it
    restore_failures: int = 0     # restores that found no usable state: prefilled again
    prefix_copies: int = 0
    copied_tokens: int = 0
    moves: int = 0                # sequences moved to close gaps between busy ids
    finished: int = 0
    failed: int = 0
    timeouts: int = 0
    cancelled: int = 0
    decode_seconds: float = 0.0   # inside llama_decode
    embed_decodes: int = 0       # embedding graphs: decodes, the texts and tokens in them
    embedded_texts: int = 0
    embedded_tokens: int = 0
    embed_seconds: float = 0.0

    def snapshot(self) -> dict[str, int | float]:
        return asdict(self)
