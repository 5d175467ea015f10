"""What the payload store can hold: the one rule the collector's parser and both backends follow.

Both stores keep text as UTF-8. Two kinds of character that Python strings can carry have no
place there: a lone UTF-16 surrogate (JSON's `"\\ud800"` escape without its pair decodes to
one, and it has no UTF-8 form, so SQLite's driver fails to encode it) and NUL (PostgreSQL's
`text` refuses it, and SQLite's string functions stop at it). The collector checks every
value of an event against this rule before the event joins a shared transaction, so one bad
event can never fail the others' commit:

- identifiers (event id, model name, model version) holding such a character are refused
  (400, naming the field): changing them would join the event to the wrong request;
- free text (the request's texts, the predicted labels) is normalized: each such character
  becomes U+FFFD, the Unicode replacement character, as a UTF-8 decoder does with bytes it
  cannot read, and the replacement is counted. The drift job still sees the text and its
  prediction, which is what the monitor is for.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from textops.components.common.errors import PayloadStoreError

#: The `reason` of a normalization: the value held a lone UTF-16 surrogate.
LONE_SURROGATE = "lone_surrogate"
#: The `reason` of a normalization: the value held a NUL character.
NUL = "nul"
#: The `reason` of a normalization: a confidence that is not a finite number, stored unknown.
NON_FINITE = "non_finite_confidence"
#: Every normalization reason, the `reason` label of the collector's counter.
NORMALIZATION_REASONS = (LONE_SURROGATE, NUL, NON_FINITE)
#: Each reason a character cannot be stored, in words for messages.
UNSTORABLE_CHARACTERS = {LONE_SURROGATE: "a lone UTF-16 surrogate", NUL: "a NUL character"}
#: What an unstorable character becomes in free text.
REPLACEMENT_CHARACTER = "\ufffd"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UnstorableDataError(PayloadStoreError):
    """The store refused the values of a write, not for an outage: the same write fails again."""


def unstorable_reason(text: str) -> str | None:
    """Why the store cannot hold `text` as it is (`LONE_SURROGATE` or `NUL`), or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    return NUL if found.group() == "\x00" else LONE_SURROGATE


def storable_text(text: str, normalized: Counter[str]) -> str:
    """`text` with each unstorable character replaced by U+FFFD; counts why in `normalized`."""
    if _UNSTORABLE.search(text) is None:
        return text
    # One count per value and reason, however many characters were replaced.
    normalized.update(
        {NUL if char == "\x00" else LONE_SURROGATE for char in _UNSTORABLE.findall(text)}
    )
    return _UNSTORABLE.sub(REPLACEMENT_CHARACTER, text)


def storable_confidence(value: float | None, normalized: Counter[str]) -> float | None:
    """`value`, or None (unknown) when it is not a finite number; counts that in `normalized`.

    SQLite stores NaN as NULL while PostgreSQL keeps it: unknown is what both can agree on.
    """
    if value is None or math.isfinite(value):
        return value
    normalized[NON_FINITE] += 1
    return None
