"""The walk: every spelling in one document becomes a checked candidate for its target, and the
precedence rules (1-5 in the package docstring) pick one winner per target."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .checks import check
from .keys import (FLAT_KEYS, KEBAB, LV_FALLBACK, LV_FLAT, LV_KEBAB, LV_NESTED, ROOT_KEYS,
                   ROOT_NESTED, SECTIONS, Ctx, Entry, Expand, Ignored, Route, home_section,
                   wasmedge_no_effect)
from .values import SKIP, Bad, kind_of, shown

# Why a key read in the wrong call does nothing; keyed by "is it a per-request setting".
_OUT_OF_SCOPE = {
    False: "a load-time setting; it has no effect on a single request",
    True: "a per-request setting (runtime config or set_input metadata); it has no effect "
          "in a backend or model configuration",
}


MAX_UNKNOWN_WARNINGS = 16
_MAX_SUGGEST_LEN = 64     # longer keys are no typo of a setting's name


@dataclass(frozen=True)
class Cand:
    target: str
    value: Any
    path: str
    rank: tuple


class Collector:
    """Walks one document: every spelling found becomes a checked candidate for its target."""

    def __init__(self, scope: tuple[str, ...]):   # the sections this call reads
        self.scope = scope
        self.cands: dict[str, list[Cand]] = {}
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.unknown_keys = 0

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def bad(self, path: str, bad: Bad) -> None:
        self.errors.append(f"{path}{bad.subpath}: {bad.kind}: got {shown(bad.value)} "
                           f"({kind_of(bad.value)}); expected {bad.expected}")

    def unknown(self, path: str, key: str, known: list[str]) -> None:
        """One warning per unknown key, with a "did you mean" for a near miss, up to
        MAX_UNKNOWN_WARNINGS; the rest are counted (finish() reports them in one line), so a
        document of thousands of unknown keys costs no difflib pass each."""
        self.unknown_keys += 1
        if self.unknown_keys > MAX_UNKNOWN_WARNINGS:
            return
        close = (difflib.get_close_matches(key, known, n=1, cutoff=0.8)
                 if isinstance(key, str) and len(key) <= _MAX_SUGGEST_LEN else [])
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.warn(f"{path if len(path) <= 80 else path[:77] + '...'}: unknown key; ignored{hint}")

    def finish(self) -> None:
        more = self.unknown_keys - MAX_UNKNOWN_WARNINGS
        if more > 0:
            self.warn(f"{more} more unknown keys; ignored")

    def is_object(self, value: Any, path: str) -> bool:
        if isinstance(value, Mapping):
            return True
        self.bad(path, Bad(value, "an object"))
        return False

    def root(self, doc: Mapping, prefix: str = "", wrapper: int = 0) -> None:
        for key, value in doc.items():
            path = f"{prefix}{key}"
            if key == "runtime" and not wrapper:
                if self.is_object(value, path):
                    self.root(value, f"{path}.", wrapper=1)
            elif key in SECTIONS:
                if isinstance(value, Mapping):
                    self.section(key, value, path, wrapper)
                elif home_section(key) in self.scope:
                    self.bad(path, Bad(value, "an object"))
                else:      # a section this call does not read: its shape does not matter
                    self.warn(f"{path}: {_OUT_OF_SCOPE[False]}; ignored")
            elif key in ROOT_NESTED:     # nested level, but not logit_bias's home section
                self.entry(ROOT_NESTED[key], key, value, path, Ctx(LV_NESTED, wrapper, "", 1))
            elif key in KEBAB:
                self.entry(KEBAB[key], key, value, path, Ctx(LV_KEBAB, wrapper, None, 1))
            elif key in FLAT_KEYS:
                self.entry(FLAT_KEYS[key], key, value, path, Ctx(LV_FLAT, wrapper, None, 1))
            elif isinstance(key, str) and wasmedge_no_effect(key):
                self.warn(f"{path}: WasmEdge key with no effect in this backend; ignored")
            else:
                self.unknown(path, key, ROOT_KEYS)

    def section(self, name: str, obj: Mapping, path: str, wrapper: int) -> None:
        table = SECTIONS[name]
        ctx = Ctx(LV_NESTED, wrapper, home_section(name), 0 if name == "memory_policy" else 1)
        for key, value in obj.items():
            if key in table:
                self.entry(table[key], key, value, f"{path}.{key}", ctx)
            else:
                self.unknown(f"{path}.{key}", key, list(table))

    def entry(self, entry: Entry, key: str, value: Any, path: str, ctx: Ctx) -> None:
        if isinstance(entry, Ignored):
            self.warn(f"{path}: {entry.reason}; ignored")
        elif isinstance(entry, Expand):
            entry.fn(self, value, path, ctx)
        else:
            for route in entry:
                self.offer(route, key, value, path, ctx)

    def offer(self, route: Route, key: str, value: Any, path: str, ctx: Ctx) -> None:
        section, field = route.target.split(".")
        if section not in self.scope:
            if route.level is None:     # a fallback route is never worth a second warning
                self.warn(f"{path}: {_OUT_OF_SCOPE[section == 'request']}; ignored")
            return
        try:
            if route.convert is not None:
                value = route.convert(value)
            if value is SKIP:
                return
            value = check(route.target, value)
        except Bad as bad:
            self.bad(path, bad)
            return
        level = ctx.level if route.level is None else route.level
        home = ctx.home is None or ctx.home == section
        rank = (level, ctx.wrapper, home, ctx.section_pref, key == field, route.pref)
        self.cands.setdefault(route.target, []).append(Cand(route.target, value, path, rank))

    def winners(self) -> dict[str, Cand]:
        """Rules 1-5 of the package docstring; any exact tie goes to the first in document order."""
        chosen = {}
        for target, cands in self.cands.items():
            best = max(cands, key=lambda c: c.rank)
            chosen[target] = best
            for cand in cands:     # a fallback spelling losing is expected: no warning
                if cand is not best and cand.value != best.value and cand.rank[0] != LV_FALLBACK:
                    self.warn(f"{cand.path}: {shown(cand.value)} ignored: {best.path} "
                              f"({shown(best.value)}) takes precedence")
        return chosen
