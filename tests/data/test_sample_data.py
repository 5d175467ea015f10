"""Data tests on the bundled sample set (UCI Sentiment Labelled Sentences), Made-With-ML style.

They pin down what the rest of the project assumes about the sample: a quick `textops run`
trains on it, and the model tests measure against it.
"""

from __future__ import annotations

import pandas as pd
import pytest

from textops.components.common import config, dataio
from textops.components.common.settings import ValidationSettings
from textops.components.preprocess.split import clean_text
from textops.components.validate.checks import Columns, validate_frame


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return dataio.read_table(str(config.sample_data_path()))


def test_size_and_columns(sample: pd.DataFrame) -> None:
    assert len(sample) == 3000
    assert list(sample.columns) == ["text", "label", "source"]


def test_nothing_is_missing(sample: pd.DataFrame) -> None:
    assert not sample.isna().any().any()
    assert (sample["text"].str.strip() != "").all()


def test_two_balanced_labels(sample: pd.DataFrame) -> None:
    shares = sample["label"].value_counts(normalize=True)
    assert set(shares.index) == {"negative", "positive"}
    assert shares.min() >= 0.45


def test_three_sources_of_1000_each_balanced_within(sample: pd.DataFrame) -> None:
    assert sample["source"].value_counts().to_dict() == {"amazon": 1000, "imdb": 1000, "yelp": 1000}
    per_source = sample.groupby("source")["label"].value_counts().unstack()
    assert (per_source == 500).all().all()


def test_texts_are_sentences_of_reasonable_length(sample: pd.DataFrame) -> None:
    lengths = sample["text"].str.len()
    assert lengths.min() >= 1
    assert lengths.max() <= 1000
    assert 30 <= lengths.median() <= 120


def test_texts_are_already_clean_of_surrounding_whitespace(sample: pd.DataFrame) -> None:
    # The README says surrounding whitespace was stripped; cleaning empties no text.
    assert (sample["text"] == sample["text"].str.strip()).all()
    assert (clean_text(sample["text"]) != "").all()


def test_few_duplicates_and_no_conflicting_labels(sample: pd.DataFrame) -> None:
    assert sample["text"].duplicated().mean() < 0.01
    labels_per_text = sample.groupby("text")["label"].nunique()
    assert (labels_per_text == 1).all()


def test_two_texts_hold_a_line_break(sample: pd.DataFrame) -> None:
    # U+0085 (NEL) where the source had a Windows-1252 ellipsis (byte 0x85) read as Latin-1.
    # The validate step warns about it; preprocessing turns it into a space.
    broken = sample[sample["text"].str.contains("\x85", regex=False)]
    assert broken.index.tolist() == [1178, 1967]
    assert not sample["text"].str.contains("[\n\r]").any()
    assert clean_text(broken["text"]).str.contains(" was there a script").any()


def test_passes_the_validate_steps_checks_with_the_default_settings(sample: pd.DataFrame) -> None:
    result = validate_frame(sample, Columns(text="text", label="label"), ValidationSettings())

    assert result.success
    assert result.rows_valid == 3000
    # The only warning is the two texts with a line break.
    assert [f.check for f in result.failed_warnings] == ["text_on_one_line"]


def test_holds_no_personal_data(sample: pd.DataFrame) -> None:
    from textops.components.common.redaction import redact_series

    _, found = redact_series(sample["text"])

    assert sum(found.values()) == 0
