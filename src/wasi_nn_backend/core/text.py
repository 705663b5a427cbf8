"""Turning token bytes into the text a user sees: UTF-8 safe, stop strings cut and held back.

TextAssembler.feed(piece_bytes) returns the text that may be shown now. Text that could be the
start of a stop string is held back until it is known not to be one, so a streamed piece never
shows part of a stop string that later completes; bytes of an unfinished UTF-8 character are held
until the character is complete.
"""
from __future__ import annotations

import codecs


class TextAssembler:
    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._stop = tuple(s for s in stop if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = False    # the decoder holds the first bytes of a character
        self._held = ""          # decoded text not yet shown (possible stop-string start)
        self.text = ""           # everything shown so far
        self.stopped_by: str | None = None

    def feed(self, piece: bytes) -> str:
        """Add a token's bytes; return the newly showable text ('' if none)."""
        if self.stopped_by is not None:
            return ""
        if not self._stop:  # nothing to hold back but unfinished UTF-8 (the decoder holds it)
            shown = self._decode(piece)
            self.text += shown
            return shown
        self._held += self._decode(piece)
        cut = self._earliest_stop()
        if cut is not None:
            index, stop = cut
            self.stopped_by = stop
            return self._show(self._held[:index], rest="")
        keep = self._partial_stop_suffix()
        return self._show(self._held[:len(self._held) - keep], rest=self._held[len(self._held) - keep:])

    def _decode(self, piece: bytes) -> str:
        """UTF-8 with held partial characters: whole characters (most tokens) decode in one
        C call; the incremental decoder takes over only around a split character."""
        if not self._partial:
            try:
                return piece.decode("utf-8")
            except UnicodeDecodeError:
                pass
        text = self._decoder.decode(piece)
        self._partial = bool(self._decoder.getstate()[0])
        return text

    def finish(self) -> str:
        """Generation ended without a stop string: release everything held."""
        if self.stopped_by is not None:
            return ""
        self._held += self._decoder.decode(b"", final=True)
        return self._show(self._held, rest="")

    def _show(self, shown: str, rest: str) -> str:
        self._held = rest
        self.text += shown
        return shown

    def _earliest_stop(self) -> tuple[int, str] | None:
        # The earliest match in the text wins; on a tie the longer stop string.
        best: tuple[int, str] | None = None
        for stop in self._stop:
            index = self._held.find(stop)
            if index >= 0 and (best is None or index < best[0]
                               or (index == best[0] and len(stop) > len(best[1]))):
                best = (index, stop)
        return best

    def _partial_stop_suffix(self) -> int:
        """Length of the longest tail of the held text that begins some stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self._held)), longest, -1):
                if self._held.endswith(stop[:size]):
                    longest = size
                    break
        return longest
