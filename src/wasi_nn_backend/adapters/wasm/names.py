"""Which model file a guest's name means: WasmEdge's ``--nn-preload`` aliases first, then (WAMR
style) a file path, but only inside a directory the user allowed.

A guest never makes the host open a path the user did not give: an alias maps to the path the
user preloaded; a bare path is resolved (symlinks included) and must lie inside one of
``allowed_dirs``. The config layer has no key that opens a file (``model.path`` is ignored,
``logging.file`` applies only to the backend the host makes), so model names are the only way.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import InvalidArgument, NotFound, Security

ENCODINGS = ("GGML",)
TARGETS = ("CPU", "GPU", "TPU", "AUTO")
PRELOAD_PREFIX = b"preload:"


@dataclass(frozen=True)
class Preload:
    name: str
    path: str


def parse_preload(spec: str) -> Preload:
    """``NAME:ENCODING:TARGET:PATH`` (WasmEdge's --nn-preload): encoding GGML, target
    CPU/GPU/TPU/AUTO, both case-insensitive; the path may itself contain ':'."""
    parts = spec.split(":", 3)
    if len(parts) != 4 or not parts[0] or not parts[3]:
        raise InvalidArgument(f"preload {spec!r} is not NAME:GGML:AUTO:PATH")
    name, encoding, target, path = parts
    if encoding.upper() not in ENCODINGS:
        raise InvalidArgument(f"preload {name!r}: encoding {encoding!r} is not GGML")
    if target.upper() not in TARGETS:
        raise InvalidArgument(f"preload {name!r}: target {target!r} is not one of "
                              f"{', '.join(TARGETS)}")
    return Preload(name, path)


class ModelNames:
    def __init__(self, preloads: Sequence[str], allowed_dirs: Sequence[str]) -> None:
        self._aliases: dict[str, str] = {}
        for spec in preloads:
            preload = parse_preload(spec)
            if preload.name in self._aliases:
                raise InvalidArgument(f"preload name {preload.name!r} is given twice")
            self._aliases[preload.name] = preload.path
        self._allowed = [os.path.realpath(folder) for folder in allowed_dirs]

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def resolve(self, name: str) -> str:
        """The model file ``name`` stands for; NotFound for an unknown alias when no directory
        is allowed, Security for a path outside the allowed directories."""
        if "\0" in name:
            raise InvalidArgument("the model name contains a NUL character")
        path = self._aliases.get(name)
        if path is not None:
            return path
        if not self._allowed:
            raise NotFound(f"no model is preloaded as {name!r} (and no directory is allowed "
                           "for model paths)")
        real = os.path.realpath(name)
        for folder in self._allowed:
            if real != folder and os.path.commonpath([real, folder]) == folder:
                return real
        raise Security(f"model path {name!r} is not a preload alias and resolves to {real!r}, "
                       "outside the allowed directories")
