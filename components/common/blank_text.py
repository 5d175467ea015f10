"""What a blank text is: one that holds only whitespace, control (Cc), format (Cf) and
separator (Z*) characters, so there is nothing in it to classify.

One rule for the validate step, which counts such rows invalid before any training, and the
predictor, which answers 400 for them: a text the data checks let through is one the served
model answers.
"""

from __future__ import annotations

import re

#: The blank code points as inclusive ranges, written out because deriving them from
#: `unicodedata` takes half a second; tests/unit/test_blank_text.py derives them and compares.
BLANK_RANGES: tuple[tuple[int, int], ...] = (
    *((0x0, 0x20), (0x7F, 0xA0), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD)),
    *((0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x1680, 0x1680), (0x180E, 0x180E)),
    *((0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x2064), (0x2066, 0x206F), (0x3000, 0x3000)),
    *((0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD)),
    *((0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001)),
    (0xE0020, 0xE007F),
)


def _literal(code_point: int) -> str:
    # Literal characters rather than escapes: pandas hands a pattern to Python's `re` or to
    # pyarrow's RE2 depending on the string backend, and the two read escapes differently.
    character = chr(code_point)
    return "\\" + character if character in "\\]^-[" else character


#: The blank characters as the inside of a regex character class (`[...]`), read alike by
#: Python's `re` and RE2.
BLANK_CHARACTERS = "".join(
    _literal(start) if start == end else f"{_literal(start)}-{_literal(end)}"
    for start, end in BLANK_RANGES
)
#: A whole text that is blank (an empty one included).
BLANK_TEXT_REGEX = f"^[{BLANK_CHARACTERS}]*$"
_CONTENT = re.compile(f"[^{BLANK_CHARACTERS}]")


def is_blank(text: str) -> bool:
    """Whether `text` holds nothing but blank characters (or nothing at all)."""
    # Leading whitespace is skipped at C speed; the search then stops at the first content.
    return _CONTENT.search(text.lstrip()) is None
