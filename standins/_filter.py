"""The tokens of Google's filter languages, shared by the stand-ins' parsers (Monitoring's
filters and the Logging query language): quoted strings, numbers, comparison operators,
parentheses and commas, words (field paths, ``AND``, function names)."""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op>!=|<=|>=|=|<|>|:)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


class FilterTokens:
    """A filter split into ``(kind, text)`` tokens, read left to right; every problem is
    a ``ValueError`` naming it (the stand-ins answer INVALID_ARGUMENT with it)."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise ValueError(f"unexpected character at offset {pos}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.pos = 0

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "end of filter")

    def _take(self, kind: str, value: str | None = None) -> str:
        found_kind, found = self._peek()
        if found_kind != kind or (value is not None and found != value):
            raise ValueError(f"expected {value or kind}, found {found!r}")
        self.pos += 1
        return found

    def _accept(self, kind: str, value: str) -> bool:
        if self._peek() == (kind, value):
            self.pos += 1
            return True
        return False


__all__ = ["FilterTokens"]
