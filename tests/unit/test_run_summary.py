"""The run summary's score lines: both test sets, the champion beside each."""

from textops.pipelines.local import score_lines


def test_both_test_sets_with_the_champion_beside_each() -> None:
    metrics = {
        "accuracy": 0.8412,
        "champion_accuracy": 0.83,
        "production_accuracy": 0.79,
        "champion_production_accuracy": 0.7512,
        "production_test_rows": 70.0,
    }
    assert score_lines(metrics) == [
        "  base test:          accuracy 0.841, champion 0.830",
        "  production test:    accuracy 0.790, champion 0.751 (70 rows)",
    ]


def test_a_first_run_without_feedback_says_so() -> None:
    assert score_lines({"accuracy": 0.9}, indent="    ") == [
        "    base test:        accuracy 0.900, no champion",
        "    production test:  none: no feedback snapshot held labelled traffic",
    ]
