"""Settings of the drift job: which tests run, with which method and threshold, on how much data.

Every setting is a field of `DriftSettings`, loadable from a YAML file whose keys are the field
names, with command-line flags winning over the file:

```yaml
min_window_rows: 500
family_alpha: 0.02
tests:
  text_length: {method: wasserstein, threshold: 0.1}
  confidence: {gate: true}
  non_letter_share: {enabled: false}
max_accuracy_drop: 0.05
```

False positives. The gating data tests that give a p-value (and the text content test, whose
cut-off is a percentile of chance) share one false-positive budget, `family_alpha`: a test
without an explicit threshold gets `family_alpha / k`, k being the number of such tests
(Bonferroni). Any one of them finding drift flags the window (unless `drift_share` asks for
more), so a window drawn from the training distribution is flagged with probability at most
`family_alpha`. Tests with a distance method (wasserstein, jensenshannon, psi, ...) and no
threshold use Evidently's default threshold for that method.

Measured with the sample run's model on 100 windows of 200 unseen sample sentences (INT8
predictions, every row labelled): 2 windows flagged (both by non_letter_share), none by the
other tests; confidence, reported at 0.05, found "drift" in 62 of them (see
`default_data_tests`).
Predicted labels use a two-sample test (see `stattests`). Distances are noisy on small
windows: the normed Wasserstein distance of text length averaged 0.083 on those windows, so
Evidently's default of 0.1 would flag about one in five; p-value tests suit windows of a few
hundred rows, distances suit large ones. Tweets sent to the review model and IMDb reviews
against an Amazon and Yelp reference are flagged in every window (tests/model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from textops.components.common.config import load_settings

#: The data tests, by the name used in the summary, the report and the `test` gauge label.
DATA_TESTS: tuple[str, ...] = (
    "text_content",
    "text_length",
    "word_count",
    "non_letter_share",
    "prediction",
    "confidence",
)
#: Evidently methods whose score is a p-value: drift when the score is below the threshold.
P_VALUE_METHODS = frozenset(
    {"anderson", "chisquare", "cramer_von_mises", "es", "fisher_exact", "g_test", "ks", "mannw"}
    | {"t_test", "z", "chisquare_homogeneity"}
)
#: Evidently's domain-classifier method: drift when the classifier's ROC AUC is above the
#: (1 - alpha) percentile of random classifiers' AUC; its threshold is that percentile.
PERCENTILE_METHODS = frozenset({"perc_text_content_drift"})


class DataTestSettings(BaseModel):
    """One data test: an Evidently drift method on one column, and what its result decides."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="Evidently drift method (stat test name), e.g. ks, chisquare.")
    threshold: float | None = Field(
        None,
        gt=0,
        description="The method's threshold; empty: a share of family_alpha for p-value "
        "methods, Evidently's default for distance methods.",
    )
    gate: bool = Field(True, description="Whether drift in this test flags the window.")
    enabled: bool = Field(True, description="Whether the test runs at all.")

    @property
    def uses_alpha(self) -> bool:
        """Whether this test's threshold is a false-positive rate (p-value or percentile)."""
        return self.method in P_VALUE_METHODS or self.method in PERCENTILE_METHODS


def default_data_tests() -> dict[str, DataTestSettings]:
    """The default tests.

    The text content test trains Evidently's domain classifier (TF-IDF and a linear model) to
    tell window texts from reference texts. Length, word count and non-letter share are
    descriptors that need no downloads. `prediction` compares predicted label shares with a
    two-sample chi-square test (`stattests.chisquare_homogeneity`: Evidently's own `chisquare`
    takes the reference's shares as exact and flags healthy windows too often).
    `confidence` is reported but does not gate: the reference sample is drawn from the
    training split, on which the model is more confident than on any unseen text, so the
    confidence of healthy traffic differs from the reference's (measured: K-S p < 0.01 in 37
    of 100 in-distribution windows of 200 rows).
    """
    return {
        "text_content": DataTestSettings(method="perc_text_content_drift"),
        "text_length": DataTestSettings(method="ks"),
        "word_count": DataTestSettings(method="ks"),
        "non_letter_share": DataTestSettings(method="ks"),
        "prediction": DataTestSettings(method="chisquare_homogeneity"),
        "confidence": DataTestSettings(method="ks", gate=False),
    }


class DriftSettings(BaseModel):
    """Thresholds of the drift job. Field descriptions are the CLI's help text."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    min_window_rows: int = Field(
        200,
        ge=1,
        description="Fewest rows a window needs; below it the job reports not enough data.",
    )
    family_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="False-positive rate shared (Bonferroni) by the gating tests whose "
        "threshold is a p-value or percentile and not set explicitly.",
    )
    drift_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the gating data tests that must find drift to flag the window; "
        "0: any one.",
    )
    tests: dict[str, DataTestSettings] = Field(
        default_factory=default_data_tests,
        description="The data tests by name (in a config file); entries given are merged into "
        "the defaults.",
    )
    min_labelled_rows: int = Field(
        100, ge=1, description="Fewest labelled rows for the accuracy and macro-F1 tests to run."
    )
    max_accuracy_drop: float = Field(
        0.10,
        ge=0,
        le=1,
        description="How far the window's accuracy may fall below the bundle's test accuracy.",
    )
    max_macro_f1_drop: float = Field(
        0.10,
        ge=0,
        le=1,
        description="How far the window's macro-F1 may fall below the bundle's test macro-F1.",
    )

    @field_validator("tests", mode="before")
    @classmethod
    def _merge_with_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        unknown = sorted(set(map(str, value)) - set(DATA_TESTS))
        if unknown:
            raise ValueError(
                f"unknown test(s) {', '.join(unknown)}: the tests are {', '.join(DATA_TESTS)}"
            )
        merged: dict[str, Any] = {name: t.model_dump() for name, t in default_data_tests().items()}
        for name, given in value.items():
            if isinstance(given, DataTestSettings):
                given = given.model_dump(exclude_unset=True)
            merged[name] = {**merged[name], **given} if isinstance(given, dict) else given
        return merged

    def alpha_tests(self) -> list[str]:
        """The gating tests that share `family_alpha`: enabled, alpha-based, no threshold set."""
        return [
            name
            for name, test in self.tests.items()
            if test.enabled and test.gate and test.uses_alpha and test.threshold is None
        ]

    def threshold_of(self, name: str) -> float | None:
        """The threshold Evidently gets for test `name` (None: the method's default).

        A p-value test without a threshold gets `family_alpha / k`; the percentile test gets
        `1 - family_alpha / k`. A non-gating test spends none of the budget and is judged at
        `family_alpha` alone.
        """
        test = self.tests[name]
        if test.threshold is not None or not test.uses_alpha:
            return test.threshold
        sharing = self.alpha_tests()
        alpha = self.family_alpha / len(sharing) if name in sharing else self.family_alpha
        return 1.0 - alpha if test.method in PERCENTILE_METHODS else alpha


class DriftJobSettings(BaseModel):
    """What one drift job of the monitoring pipeline reads and where it reports: the store,
    the bundle, the window. (`textops drift` has flags of its own for these.)"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store_url: str = Field(
        "",
        description="Payload store to fetch traffic from; empty: $TEXTOPS_STORE_URL (the "
        "pipeline sets it from the collector's Secret), else the local SQLite file.",
    )
    bundle: str = Field(
        "",
        description="The model bundle to compare with (a directory or an s3:// URI); empty: "
        "the bundle in production.",
    )
    since: str = Field(
        "24h",
        description="Start of the window: ISO 8601 time or a duration back from now (30m, "
        "24h, 7d); empty: unbounded.",
    )
    until: str = Field(
        "", description="End of the window: ISO 8601 time or a duration back from now."
    )
    last: int = Field(0, description="Only the most recent N texts; 0 (or less): all of them.")
    workspace: str = Field("", description="Evidently workspace the run is added to; empty: none.")
    pushgateway: str = Field(
        "", description="Prometheus Pushgateway the gauges are pushed to; empty: none."
    )


def load_drift_settings(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> DriftSettings:
    """Build drift settings from an optional YAML file, then apply overrides (CLI flags).

    Args:
        path: A YAML file holding a mapping of setting names to values, or None for defaults.
        overrides: Values that win over the file; None values are ignored. `tests` entries are
            merged test by test.

    Raises:
        ConfigError: The file is missing or unreadable, or a value is invalid or unknown.
    """
    return load_settings(
        DriftSettings,
        path,
        overrides,
        what="drift settings",
        file_what="drift settings file",
        whole="settings",
    )
