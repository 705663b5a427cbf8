"""KV decisions for a request: what of a session's cache is reused (its own prefix, or a prefix
copied from another session), when and how to shift, what to trim or offload under memory
pressure. The slots themselves are slots.py's SlotPool. Returns plans (KvAction lists);
performs nothing.
"""
from __future__ import annotations

from ..config import MemoryConfig
from ..errors import PromptTooLong
from .plan import CopyPrefix, KvAction, Shift, Trim
from .request import SequenceState
from .slots import SlotPool

# A prefix copy must save prefilling at least this many tokens: it moves a whole KV stream.
MIN_PREFIX_COPY = 16


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens ``a`` and ``b`` share from the start. Slices compare in C: windows
    that double while they match, then a binary search in the last one, so the cost follows
    the shared part, not the lists' length (the scheduler compares waiting prompts with
    prefilling ones and resident caches every step)."""
    n = min(len(a), len(b))
    lo, hi = 0, min(16, n)   # a[:lo] == b[:lo]; hi: the window to try next
    while hi > lo and a[lo:hi] == b[lo:hi]:
        if hi == n:
            return n
        lo, hi = hi, min(2 * hi, n)
    while hi - lo > 1:       # a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def keep_count(n_ctx: int, memory: MemoryConfig) -> int:
    """Tokens kept at the start on a context shift (capped at half the context so a shift
    always frees a useful amount)."""
    return min(memory.n_keep_tokens, n_ctx // 2)


def discard_count(n_tokens: int, n_keep: int, memory: MemoryConfig, at_least: int = 1) -> int:
    n_left = n_tokens - n_keep
    wanted = memory.n_discard_tokens or n_left // 2
    return max(1, min(max(wanted, at_least), n_left - 1))


def plan_prompt(session: SequenceState, prompt: list[int], *, n_ctx: int, memory: MemoryConfig,
                can_shift: bool, truncate_ok: bool, donors: list[SequenceState] | None = None
                ) -> tuple[list[int], int, list[KvAction]]:
    """Fit ``prompt`` into the session's sequence: (prompt as it will be held, tokens reused,
    actions). Over-long chat prompts are context-shifted when allowed; else PromptTooLong.
    With ``donors`` (memory.enable_token_cache_reuse), a prefix another resident session
    holds is copied instead of prefilled."""
    donors = donors or []
    prompt = _map_through_cuts(session, prompt, truncate_ok)
    room = n_ctx - 1  # at least one token must be generated
    kv = session.kv_tokens
    lcp = common_prefix(kv, prompt)
    actions: list[KvAction] = []
    if len(prompt) > room:
        if not (truncate_ok and memory.context_shifting and can_shift):
            raise PromptTooLong(f"prompt has {len(prompt)} tokens; the context holds {n_ctx} "
                                f"per session (at most {room} for a prompt)")
        n_keep = keep_count(n_ctx, memory)
        discard = discard_count(len(prompt), n_keep, memory, at_least=len(prompt) - room)
        if len(prompt) - discard > room:
            raise PromptTooLong(f"prompt has {len(prompt)} tokens; even after dropping {discard} "
                                f"it does not fit the context of {n_ctx}")
        shifted = prompt[:n_keep] + prompt[n_keep + discard:]
        if lcp > n_keep + discard:
            # The part to drop is already cached: shift the KV instead of re-prefilling.
            if lcp < len(kv):
                actions.append(Trim(session, lcp))
            actions.append(Shift(session, n_keep, discard))
            kv_after = kv[:n_keep] + kv[n_keep + discard:lcp]
        else:
            kv_after = kv
        prompt = shifted
        lcp = common_prefix(kv_after, prompt)
        kv = kv_after
    else:
        copy = _prefix_copy(session, prompt, lcp, donors)
        if copy is not None:
            actions.append(copy)
            kv = session.kv_tokens = list(copy.tokens)  # planned; the engine makes it so
            lcp = len(kv)
    reuse = min(lcp, len(prompt) - 1)
    if reuse < len(kv):
        actions.append(Trim(session, reuse))
    return prompt, reuse, actions


def _map_through_cuts(session: SequenceState, prompt: list[int], truncate_ok: bool
                      ) -> list[int]:
    """A chat prompt that continues a session whose middle was dropped under memory pressure
    is cut the same way (as a context shift would), so its cache still matches."""
    cut_from, cuts = session.cut_from, session.cuts
    session.cut_from, session.cuts = None, []
    if cut_from is None or not truncate_ok or prompt[:len(cut_from)] != cut_from:
        return prompt
    for keep, discard in cuts:
        prompt = prompt[:keep] + prompt[keep + discard:]
    return prompt


def pressure_limit(pool: SlotPool, *, n_ctx: int, memory: MemoryConfig) -> int:
    """The most tokens the resident sessions' caches hold before idle ones give cells back:
    max_cache_tokens, or memory_pressure_threshold of all cells, whichever is less."""
    return min(memory.max_cache_tokens,
               int(memory.memory_pressure_threshold * n_ctx * pool.n_slots))


def cached_tokens(pool: SlotPool) -> int:
    return sum(len(s.kv_tokens) for s in pool.resident)


def plan_pressure_relief(pool: SlotPool, *, n_ctx: int, memory: MemoryConfig,
                         can_shift: bool) -> list[KvAction]:
    """While the sessions' caches hold more than pressure_limit, idle sessions give cells
    back: the oldest part of a long one (enable_partial_cache_deletion), or the whole of it
    (offloaded or evicted)."""
    limit = pressure_limit(pool, n_ctx=n_ctx, memory=memory)
    used = cached_tokens(pool)
    if used <= limit:
        return []  # the common case, every step: no sorting of victims
    actions: list[KvAction] = []
    n_keep = keep_count(n_ctx, memory)
    for victim in pool.victims():
        if used <= limit:
            break
        n_tokens = len(victim.kv_tokens)
        if memory.enable_partial_cache_deletion and can_shift and n_tokens >= 2 * n_keep + 8:
            discard = (n_tokens - n_keep) // 2
            if victim.cut_from is None:
                victim.cut_from = list(victim.kv_tokens)
            victim.cuts.append((n_keep, discard))
            actions.append(Shift(victim, n_keep, discard))
            used -= discard
        else:
            actions.extend(pool.give_back(victim))
            used -= n_tokens
    return actions


def held_prefix(session: SequenceState, prompt: list[int], donors: list[SequenceState]) -> int:
    """The most of ``prompt`` the session's own cache (resident or offloaded) or a resident
    donor holds now: what it would not prefill if admitted now."""
    own = session.kv_tokens if session.seq_id is not None else session.offloaded_tokens or []
    held = common_prefix(own, prompt)
    for donor in donors:
        if donor is not session and donor.seq_id is not None:
            held = max(held, common_prefix(donor.kv_tokens, prompt))
    return held


def _prefix_copy(session: SequenceState, prompt: list[int], own: int,
                 donors: list[SequenceState]) -> CopyPrefix | None:
    """The resident session whose cache shares the longest prefix with ``prompt``, if that
    saves prefilling at least MIN_PREFIX_COPY tokens more than what ``session`` holds itself
    (a copy of a few tokens would move a whole KV stream to save less than it costs)."""
    best, best_len = None, own + MIN_PREFIX_COPY - 1
    for donor in donors:
        if donor is session or donor.seq_id is None:
            continue
        shared = common_prefix(donor.kv_tokens, prompt)
        if shared > best_len:
            best, best_len = donor, shared
    if best is None:
        return None
    return CopyPrefix(session, best, tuple(prompt[:best_len]))


def plan_generation_room(session: SequenceState, *, n_ctx: int, memory: MemoryConfig,
                         can_shift: bool) -> Shift | None:
    """Room for one more token: None if there is room already, a Shift if shifting frees it.
    Raises LookupError when the context is full and shifting is off or impossible."""
    n_tokens = len(session.kv_tokens)
    if n_tokens + 1 <= n_ctx:
        return None
    if not (memory.context_shifting and can_shift):
        raise LookupError("context full")
    n_keep = keep_count(n_ctx, memory)
    return Shift(session, n_keep, discard_count(n_tokens, n_keep, memory))
