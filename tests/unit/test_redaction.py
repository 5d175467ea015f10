"""Redaction of personal data: what is replaced, and the numbers that must be left alone."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from textops.components.common.redaction import iban_valid, luhn_valid, redact, redact_series


@pytest.mark.parametrize(
    ("text", "redacted", "kind"),
    [
        ("write to jane.doe+news@mail.example.co.uk.", "write to [EMAIL].", "EMAIL"),
        ("ID: J_Smith99@example.org", "ID: [EMAIL]", "EMAIL"),
        ("card 4111 1111 1111 1111 exp 12/27", "card [CARD] exp 12/27", "CARD"),
        ("card 4111-1111-1111-1111", "card [CARD]", "CARD"),
        ("amex 378282246310005.", "amex [CARD].", "CARD"),
        ("visa 4222222222222 ok", "visa [CARD] ok", "CARD"),
        ("qty 2 4111 1111 1111 1111", "qty 2 [CARD]", "CARD"),
        ("4111111111111111 2024", "[CARD] 2024", "CARD"),
        ("pay to DE89 3704 0044 0532 0130 00 today", "pay to [IBAN] today", "IBAN"),
        ("GB82WEST12345698765432", "[IBAN]", "IBAN"),
        ("iban fr1420041010050500013m02606", "iban [IBAN]", "IBAN"),
        ("call +44 20 7946 0958 now", "call [PHONE] now", "PHONE"),
        ("call +1 (555) 123-4567", "call [PHONE]", "PHONE"),
        ("ring 0049 30 1234567", "ring [PHONE]", "PHONE"),
        ("(555) 123-4567 or 555.123.4567", "[PHONE] or [PHONE]", "PHONE"),
        ("office 020 7946 0958", "office [PHONE]", "PHONE"),
        ("mobile 07700 900123", "mobile [PHONE]", "PHONE"),
        ("tel 01 23 45 67 89", "tel [PHONE]", "PHONE"),
        ("tel 0612345678", "tel [PHONE]", "PHONE"),
        ("Berlin 030/1234567", "Berlin [PHONE]", "PHONE"),
    ],
)
def test_personal_data_is_replaced_and_counted(text: str, redacted: str, kind: str) -> None:
    result, counts = redact(text)

    assert result == redacted
    assert counts == Counter({kind: redacted.count(f"[{kind}]")})


@pytest.mark.parametrize(
    "text",
    [
        "in 1999 it cost $1,299.99",
        "between 1999 2000 2001",
        "order 1234567 shipped",
        "order #12345678",
        "ref 2000-123-4567",
        "on 2023-01-15 at 10:30",
        "on 01.02.2023 10:30",
        "dates 12/25/2023 and 01/02/2024",
        "version 1.2.3.4",
        "4111 1111 1111 1112",  # a card-like number failing the Luhn check
        "GB82 WEST 1234 5698 7654 33",  # an IBAN with a wrong check digit
        "5551234567",  # ten digits run together are an id as often as a phone number
        "user@localhost has no domain",
        "score 10-12, 3-1 and 0-0",
        "+5 stars",
    ],
)
def test_plain_numbers_are_left_alone(text: str) -> None:
    assert redact(text) == (text, Counter())


def test_several_kinds_in_one_text() -> None:
    text = "Me: a@b.io, +33 1 23 45 67 89, card 5555 5555 5555 4444, IBAN GB82WEST12345698765432."

    result, counts = redact(text)

    assert result == "Me: [EMAIL], [PHONE], card [CARD], IBAN [IBAN]."
    assert counts == Counter({"EMAIL": 1, "PHONE": 1, "CARD": 1, "IBAN": 1})


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("79927398713", True), ("79927398710", False), ("0", True)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("candidate", "valid"),
    [
        ("GB82 WEST 1234 5698 7654 32", True),
        ("gb82west12345698765432", True),
        ("GB82 WEST 1234 5698 7654 33", False),
        ("GB82", False),  # too short
        ("GB82 WÉST 1234 5698 7654 32", False),  # not ASCII
        ("GB82-WEST-1234-5698-7654-32", False),  # not alphanumeric
        # The ISO 13616 lengths, 15 to 34 characters; each candidate's check digits are right.
        ("NO9386011117947", True),  # 15, Norway's length
        ("XX32111111111111111111111111111111", True),  # 34
        ("GB50WEST1234", False),  # 12: too short, though mod 97 gives 1
        ("XX651111111111111111111111111111111", False),  # 35: too long
    ],
)
def test_iban_check(candidate: str, valid: bool) -> None:
    assert iban_valid(candidate) is valid


def test_series_keeps_index_missing_values_and_non_strings() -> None:
    texts = pd.Series(
        ["plain text", "mail x@y.com", None, np.nan, 42, "call +44 20 7946 0958 or z@w.org"],
        index=[10, 11, 12, 13, 14, 15],
        dtype=object,
    )

    redacted, counts = redact_series(texts)

    assert redacted.index.tolist() == [10, 11, 12, 13, 14, 15]
    assert redacted[10] == "plain text"
    assert redacted[11] == "mail [EMAIL]"
    assert redacted[12] is None and np.isnan(redacted[13]) and redacted[14] == 42
    assert redacted[15] == "call [PHONE] or [EMAIL]"
    assert counts == Counter({"EMAIL": 2, "PHONE": 1})
    assert texts[11] == "mail x@y.com"  # the input is not modified


def test_series_of_arrow_strings_stays_a_string_column() -> None:
    texts = pd.Series(["a@b.io", "nothing here", None], dtype="string")

    redacted, counts = redact_series(texts)

    assert redacted.dtype == texts.dtype
    assert redacted.tolist()[:2] == ["[EMAIL]", "nothing here"]
    assert pd.isna(redacted.iloc[2])
    assert counts == Counter({"EMAIL": 1})


def test_module_is_light() -> None:
    # The drift collector imports it on the serving path.
    code = "import sys, textops.components.common.redaction; print('pandas' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # A 19-digit card printed in groups: its first 16 digits pass the Luhn check too, but
        # the longest valid stretch is the card.
        ("card 4111 1111 1111 1111 110", "card [CARD]"),
        # Of two valid stretches the longer wins, though the shorter starts first.
        ("9 84424468 808532 585", "9 [CARD]"),
        # E.164: 8 to 15 digits after + or 00, country code included.
        ("+49 301 234", "[PHONE]"),
        ("+49 301 23", "+49 301 23"),
        ("+49 3012 3456 7890 1", "[PHONE]"),
        ("+49 3012 3456 7890 13", "+49 3012 3456 7890 13"),
        ("0049 301 234", "[PHONE]"),
        ("0049 301 23", "0049 301 23"),
        ("0049 3012 3456 7890 1", "[PHONE]"),
        ("0049 3012 3456 7890 13", "0049 3012 3456 7890 13"),
        # A national number with its trunk 0: 9 to 12 digits.
        ("012 345 678", "[PHONE]"),
        ("012 345 67", "012 345 67"),
        ("0123 4567 8901", "[PHONE]"),
        ("01234 5678 9012", "01234 5678 9012"),
    ],
)
def test_digit_counts_on_the_bounds(text: str, redacted: str) -> None:
    assert redact(text)[0] == redacted
