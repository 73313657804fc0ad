"""Strict checks of client-sent text: prompts, ``Idempotency-Key`` values, SSE event ids.

The service refuses what it cannot take as sent rather than cleaning it silently:

- A prompt may hold letters, combining marks, digits, punctuation, the symbols of Unicode categories
  ``Sm`` (math), ``Sc`` (currency) and ``Sk`` (modifier), and the whitespace characters space, tab and
  newline (runs of whitespace are collapsed to one space). Refused: control characters (NUL...), format
  characters (U+200B zero-width space, U+202E right-to-left override...), emoji and other pictographs
  (category ``So``), surrogates, private-use and unassigned code points.
- An ``Idempotency-Key`` is 1-200 printable ASCII characters (``!`` to ``~``, no spaces).
- An event id (``Last-Event-ID``) is ``0`` or ``<ms>-<seq>`` with both numbers below 2**64
  (Redis stream ids are two unsigned 64-bit integers).
"""

from __future__ import annotations

import re
import unicodedata

PROMPT_WHITESPACE = frozenset(" \t\n\r")
PROMPT_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No",
                               "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "Zs"})
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,200}$"
EVENT_ID_PATTERN = r"^(0|[0-9]{1,20}-[0-9]{1,20})$"
STREAM_ID_MAX = 2**64 - 1
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


def describe_char(ch: str) -> str:
    """``"U+202E (RIGHT-TO-LEFT OVERRIDE)"``."""
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')})"


def check_prompt_text(text: str) -> str:
    """Return ``text`` if every character is allowed in a prompt; raise ``ValueError`` naming the first
    one that is not (its position and code point)."""
    for i, ch in enumerate(text):
        if ch in PROMPT_WHITESPACE:
            continue
        category = unicodedata.category(ch)
        if category not in PROMPT_CATEGORIES:
            raise ValueError(
                f"character {i} is {describe_char(ch)} (category {category}), which prompts may not contain; "
                "allowed: letters, marks, digits, punctuation, math/currency/modifier symbols and spaces"
            )
    return text


def check_event_id(value: str) -> str:
    """Return ``value`` if it is a Redis stream id (``0`` or ``ms-seq``, each below 2**64); raise
    ``ValueError`` otherwise."""
    if not _EVENT_ID.match(value):
        raise ValueError(f"{value!r} is not an event id like '1718000000000-0'")
    if value != "0" and any(int(part) > STREAM_ID_MAX for part in value.split("-")):
        raise ValueError(f"{value!r} is out of range: both numbers of an event id are below 2**64")
    return value
