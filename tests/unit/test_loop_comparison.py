"""How `textops loop` keeps tweets back from feedback and reports each version's accuracy."""

import pandas as pd

from textops.pipelines.loop_comparison import (
    Comparison,
    VersionScores,
    accuracy_lines,
    held_out_start,
    held_out_traffic,
    original_test_rows,
    withhold_labels,
)


def tweets(labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"tweet {i}" for i in range(len(labels))], "label": labels})


def test_the_held_out_tail_is_never_posted_and_is_what_the_versions_are_scored_on() -> None:
    traffic = tweets(["negative", "", "positive", "negative", "", "positive"])
    assert held_out_start(len(traffic)) == 4
    posted = withhold_labels(traffic)
    assert posted["label"].tolist() == ["negative", "", "positive", "negative", "", ""]
    assert traffic["label"].iloc[5] == "positive"  # the replayed traffic keeps its labels
    # Only the held-out texts with a label the model knows are scored.
    assert held_out_traffic(traffic)["text"].tolist() == ["tweet 5"]


def test_original_test_rows_are_those_no_version_trained_on() -> None:
    first = tweets(["negative", "positive", "negative"])
    retrained_test = first.iloc[[0, 2]]
    assert original_test_rows(first, None).equals(first)
    assert original_test_rows(first, retrained_test)["text"].tolist() == ["tweet 0", "tweet 2"]


def test_accuracy_lines_name_each_version_and_what_it_was_scored_on() -> None:
    comparison = Comparison([VersionScores(3, 0.7, 0.9), VersionScores(4, 0.8125, 0.905)], 40, 112)
    assert accuracy_lines(comparison) == [
        "  held-out tweets:    version 3 0.700, version 4 0.812 "
        "(40 shifted texts whose labels were never posted)",
        "  original test:      version 3 0.900, version 4 0.905 "
        "(112 rows of version 3's test split that no version trained on)",
    ]
