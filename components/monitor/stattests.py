"""A drift test Evidently lacks: the chi-square test of homogeneity of two samples of labels.

Evidently's `chisquare` is a goodness-of-fit test that takes the reference's label shares as
exact. The reference is a sample too (2,000 to 10,000 rows), so that test's statistic is
inflated by about sqrt(1 + window rows / reference rows): harmless for 200 rows against 2,000
(a false-positive rate of about 1.1% at a 1% threshold), but for 100,000 rows against 10,000 it
flags about 44% of healthy windows at a 1% threshold. The test of homogeneity compares the two
samples' counts in one contingency table and accounts for both.

`register()` adds it to Evidently's registry under `chisquare_homogeneity`, so that a
`ValueDrift(method="chisquare_homogeneity")` uses it; it imports Evidently, so call it only where
Evidently is used anyway.
"""

from __future__ import annotations

from typing import Any

#: The method name drift settings use.
CHISQUARE_HOMOGENEITY = "chisquare_homogeneity"


def chisquare_homogeneity(
    reference: Any, current: Any, feature_type: Any, threshold: float
) -> tuple[float, bool]:
    """p-value of the chi-square test that both samples share one label distribution.

    Missing values are left out. A label seen in one sample only counts as a category with no
    rows in the other. Identical single-label samples give p = 1.
    """
    import numpy as np
    import pandas as pd
    from scipy.stats import chi2_contingency

    ref_counts = pd.Series(reference).dropna().value_counts()
    cur_counts = pd.Series(current).dropna().value_counts()
    labels = sorted(set(ref_counts.index) | set(cur_counts.index), key=str)
    table = np.array(
        [
            [ref_counts.get(label, 0) for label in labels],
            [cur_counts.get(label, 0) for label in labels],
        ],
        dtype=float,
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0, False
    p_value = float(chi2_contingency(table, correction=False).pvalue)
    return p_value, p_value < threshold


def register() -> None:
    """Register `chisquare_homogeneity` with Evidently (once per process)."""
    from evidently.legacy.calculations.stattests.registry import (
        StatTest,
        get_registered_stattest,
        register_stattest,
    )
    from evidently.legacy.core import ColumnType

    try:
        get_registered_stattest(CHISQUARE_HOMOGENEITY, ColumnType.Categorical)
        return
    except ValueError:
        pass  # not registered yet
    register_stattest(
        StatTest(
            name=CHISQUARE_HOMOGENEITY,
            display_name="chi-square test of homogeneity p_value",
            allowed_feature_types=[ColumnType.Categorical],
            default_threshold=0.05,
        ),
        default_impl=chisquare_homogeneity,
    )
