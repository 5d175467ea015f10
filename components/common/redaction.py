"""Redaction of personal data in free text: e-mail addresses, phone numbers, cards and IBANs.

Each match is replaced by a placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`) and counted;
the counts are what callers log or record, never the values. The validate step redacts the
training data before any check, report or output sees it, and the drift collector redacts live
traffic the same way, so this module needs nothing beyond `re` and the standard library.

Numbers are redacted only where they can be what they look like: a card number must pass the
Luhn check, an IBAN the ISO 7064 mod-97 check, and a phone number must have as many digits as
a real one, so years, prices, dates and short order numbers stay as they are.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: The kinds of personal data found, in the order they are redacted.
KINDS = ("EMAIL", "IBAN", "CARD", "PHONE")

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
    r"(?![A-Za-z0-9-])"
)
# Country code, check digits, then the account number in groups of four as it is printed,
# or run together. Letters may be lowercase as typed; the mod-97 check keeps words out.
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
    re.IGNORECASE,
)
# 13 to 19 digits, single spaces or dashes allowed between them; the Luhn check decides.
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
# Three shapes, each checked for its digit count in `_redact_phone`:
#   international: +44 20 7946 0958, +1 (555) 123-4567, 0049 30 1234567
#   national with a trunk 0: 020 7946 0958, 07700 900123, 01 23 45 67 89, 030/1234567
#   North American: (555) 123-4567, 555-123-4567, 555.123.4567
# A national number keeps one separator throughout, so "01.02.2023 10" (a date and an hour)
# is not read as a phone number.
_PHONE = re.compile(
    r"(?<![\w+])(?P<international>(?:\+|00)[1-9][\d ().-]{5,20}\d)(?!\d)"
    r"|(?<![\w+.,/-])(?P<trunk>0\d{1,4}(?P<sep>[ ./-]?)\d{2,8}(?:(?P=sep)\d{2,4}){0,3})"
    r"(?![\w.,/-]?\d)"
    r"|(?<![\w+.,/-])(?P<nanp>(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4})(?![\w.,/-]?\d)"
)
# A cheap first pass over many texts: every pattern above needs an @, a letter pair followed by
# two digits, or a run of at least 8 digits, so texts without any of these are left untouched.
_CANDIDATE = re.compile(r"@|[A-Za-z]{2}[0-9]{2}|\d(?:[ ()./-]*\d){7,}")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check that card numbers carry."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """Whether `candidate` (spaces allowed) is an IBAN: 15 to 34 characters, mod 97 equal to 1."""
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    # Move the country code and check digits to the end, letters become 10..35 (ISO 13616).
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdecimal())


_GROUP = re.compile(r"\d+")


def _redact_card(match: re.Match[str]) -> str | None:
    """The run with its longest Luhn-valid stretch of whole digit groups replaced, if any.

    The run may start or end with digits that are not part of the card ("qty 2 4111 ..."),
    so stretches of whole groups are tried, longest first.
    """
    run = match.group()
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    stretches = sorted(
        ((i, j) for i in range(len(groups)) for j in range(i, len(groups))),
        key=lambda span: groups[span[0]][0] - groups[span[1]][1],
    )
    for i, j in stretches:
        start, end = groups[i][0], groups[j][1]
        digits = _digits(run[start:end])
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return run[:start] + "[CARD]" + run[end:]
    return None


def _redact_iban(match: re.Match[str]) -> str | None:
    return "[IBAN]" if iban_valid(match.group()) else None


def _redact_phone(match: re.Match[str]) -> str | None:
    digits = len(_digits(match.group()))
    if match.group("international") is not None:
        prefix = 2 if match.group().startswith("00") else 0
        # E.164 allows at most 15 digits; 8 is the shortest number with a country code.
        valid = 8 <= digits - prefix <= 15
    elif match.group("trunk") is not None:
        valid = 9 <= digits <= 12
    else:
        valid = digits == 10
    return "[PHONE]" if valid else None


def _redact_email(match: re.Match[str]) -> str | None:
    return "[EMAIL]"


_PASSES: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str | None]], ...] = (
    # E-mail first: an address may hold digits that would read as a number.
    ("EMAIL", _EMAIL, _redact_email),
    ("IBAN", _IBAN, _redact_iban),
    ("CARD", _CARD, _redact_card),
    ("PHONE", _PHONE, _redact_phone),
)


def redact(text: str) -> tuple[str, Counter[str]]:
    """Replace personal data in one text by placeholders.

    Args:
        text: Any text.

    Returns:
        The redacted text and how many of each kind (`EMAIL`, `IBAN`, `CARD`, `PHONE`) were
        replaced. Only counts leave this function, so they are safe to log.
    """
    counts: Counter[str] = Counter()
    if not _CANDIDATE.search(text):
        return text, counts
    for kind, pattern, decide in _PASSES:

        def replace(
            match: re.Match[str],
            kind: str = kind,
            decide: Callable[[re.Match[str]], str | None] = decide,
        ) -> str:
            placeholder = decide(match)
            if placeholder is None:
                return match.group()
            counts[kind] += 1
            return placeholder

        text = pattern.sub(replace, text)
    return text, counts


def redact_series(texts: pd.Series) -> tuple[pd.Series, Counter[str]]:
    """Redact every text of a pandas Series; missing and non-string values are left alone.

    Only the texts that pass a cheap first search are run through the full patterns, which
    keeps a million short texts to about a second.

    Args:
        texts: The texts, any index and dtype.

    Returns:
        A copy with the personal data replaced (same index and dtype), and the counts per kind
        over all texts.
    """
    values = texts.tolist()
    positions = [
        i for i, value in enumerate(values) if isinstance(value, str) and _CANDIDATE.search(value)
    ]
    total: Counter[str] = Counter()
    redacted = texts.copy()
    if not positions:
        return redacted, total
    replaced: list[str] = []
    for i in positions:
        text, counts = redact(values[i])
        replaced.append(text)
        total.update(counts)
    redacted.iloc[positions] = replaced
    return redacted, total
