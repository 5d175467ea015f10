"""One rule for a blank text, held to Unicode and shared by the validate step and the predictor."""

from __future__ import annotations

import re
import sys
import unicodedata

import pandas as pd
import pytest

from textops.components.common.blank_text import BLANK_CHARACTERS, BLANK_TEXT_REGEX, is_blank
from textops.components.serve.payloads import BadRequestError, parse_request


def test_blank_characters_are_whitespace_control_format_and_separators() -> None:
    """The written-out ranges are the ones `unicodedata` gives for this Python's Unicode."""
    blank = re.compile(f"[{BLANK_CHARACTERS}]")
    listed = {c for c in range(sys.maxunicode + 1) if blank.fullmatch(chr(c))}
    derived = {
        c
        for c in range(sys.maxunicode + 1)
        if chr(c).isspace() or unicodedata.category(chr(c)) in {"Cc", "Cf", "Zs", "Zl", "Zp"}
    }
    assert listed == derived, f"Unicode {unicodedata.unidata_version}: {listed ^ derived}"


TEXTS = ["", " ", "\x00\x00", "\u200b\u200e", "\ufeff\t", "\U000e0020", "a", " \x00x", "-", "]"]


@pytest.mark.parametrize("dtype", ["string[pyarrow]", "string[python]", object])
def test_the_validate_step_and_the_predictor_agree_on_every_backend(dtype: object) -> None:
    """pandas reads the pattern with RE2 or Python's `re` by backend: both give one answer."""
    texts = pd.Series(TEXTS, dtype=dtype)  # type: ignore[call-overload]
    by_pandas = texts.str.fullmatch(BLANK_TEXT_REGEX).astype(bool).tolist()
    assert by_pandas == [is_blank(text) for text in TEXTS]
    assert by_pandas == [True] * 6 + [False] * 4
    for text, blank in zip(TEXTS, by_pandas, strict=True):
        if blank:
            with pytest.raises(BadRequestError, match="nothing to classify"):
                parse_request({"instances": [text]}, {}, 8)
        else:
            assert parse_request({"instances": [text]}, {}, 8).texts == [text]
