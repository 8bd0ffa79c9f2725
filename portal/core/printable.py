"""Text from a file made safe to print: control and format characters escaped, length capped."""

from __future__ import annotations

import unicodedata

# Cc: controls (ESC starts a terminal escape); Cf: format characters such as the bidi
# overrides, which reorder what the operator reads; Zl, Zp: line and paragraph separators.
HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def shown(text: str, limit: int | None = None) -> str:
    """`text` with every control or format character written as an escape (`\\x1b`).

    With `limit`, a longer text is cut to that many characters and ends in "…".
    """
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 1)] + "…"
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in HIDDEN else ch for ch in text)


def quoted(value: str, limit: int = 60) -> str:
    """A value someone gave, in quotes, made safe to print and cut short: 'nonsense'."""
    return f"'{shown(value, limit)}'"


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
