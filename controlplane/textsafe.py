"""Text from outside (probe answers, headers, stored rows) made safe to store and to print.

One rule, used by the probes before a result is built, by the store before a
row is written and by the CLI before anything reaches a terminal: every
control character (C0, DEL, C1: NUL, ESC, the 8-bit CSI ...), every format
character (bidi overrides and isolates, zero-width characters) and every lone
surrogate is replaced by its escape (``\\x1b``, ``\\u202e``). Nothing is
dropped silently, so the evidence stays readable, and nothing can move the
cursor, retitle a terminal, reorder a line or break a PostgreSQL text column.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "..."
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_cache: dict[str, bool] = {}


def _unsafe(c: str) -> bool:
    known = _cache.get(c)
    if known is None:
        known = _cache[c] = unicodedata.category(c) in _UNSAFE_CATEGORIES
    return known


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with every control/format character (except those in ``keep``) escaped."""
    if text.isprintable():
        return text  # the common case: no control, format or surrogate character at all
    return "".join(_escape(c) if _unsafe(c) and c not in keep else c for c in text)


def is_clean(text: str, keep: str = "") -> bool:
    return not any(_unsafe(c) and c not in keep for c in text)


def bounded_text(text: str, limit: int) -> str:
    """Escaped and at most ``limit`` characters (cut with ``...``, never inside an escape)."""
    clean = escape_controls(text)
    if len(clean) <= limit:
        return clean
    cut = clean[: max(0, limit - len(ELLIPSIS))]
    backslash = cut.rfind("\\", max(0, len(cut) - 6))
    if backslash != -1 and not _complete_escape(clean, backslash, len(cut)):
        cut = cut[:backslash]
    return cut + ELLIPSIS


def _complete_escape(text: str, start: int, end: int) -> bool:
    token = text[start:]
    width = 4 if token.startswith("\\x") else 6 if token.startswith("\\u") else 0
    return width == 0 or start + width <= end


def terminal_safe(text: str) -> str:
    """For printing: newlines kept (tabs too), everything else that could drive a terminal escaped."""
    return escape_controls(text, keep="\n\t")
