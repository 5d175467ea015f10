"""Behavioural tests of a model, in the style of Made-With-ML (after Ribeiro et al.'s CheckList).

- minimum functionality (`mft`): simple cases the model must get right;
- invariance: filling a template with names, products or places must not change the label;
- directional: a perturbation must move one label's probability up or down.

They are defined per use case in the configuration (`BehaviourTest`) and run on the challenger;
a failing test whose `gate` is set keeps the model from shipping.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from textops.components.common.errors import ConfigError, DataError
from textops.components.common.labels import LabelMap
from textops.components.common.settings import BehaviourTest
from textops.components.evaluate.classifiers import ProbabilisticClassifier

logger = logging.getLogger(__name__)

#: Failing cases kept per test, for the report.
MAX_FAILURE_EXAMPLES = 5
_DIRECTIONS = ("up", "down")


@dataclass(frozen=True)
class BehaviourResult:
    """The outcome of one behavioural test."""

    name: str
    kind: str
    gate: bool
    cases: int
    passed_cases: int
    min_pass_rate: float
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pass_rate(self) -> float:
        """Share of cases that passed."""
        return self.passed_cases / self.cases if self.cases else 0.0

    @property
    def passed(self) -> bool:
        """Whether enough cases passed."""
        # A hair of tolerance: 2/3 of cases against a configured 0.6667 is a pass.
        return self.pass_rate + 1e-9 >= self.min_pass_rate

    def sentence(self) -> str:
        """One line for the decision's reasons and the report."""
        verdict = "passed" if self.passed else "FAILED"
        role = "gating" if self.gate else "not gating, reported only"
        return (
            f"behaviour test '{self.name}' ({self.kind}) {verdict}: {self.passed_cases}/"
            f"{self.cases} cases = {self.pass_rate:.0%}, required {self.min_pass_rate:.0%} "
            f"({role})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the decision file."""
        return {
            "name": self.name,
            "kind": self.kind,
            "gate": self.gate,
            "cases": self.cases,
            "passed_cases": self.passed_cases,
            "pass_rate": self.pass_rate,
            "min_pass_rate": self.min_pass_rate,
            "passed": self.passed,
            "failures": list(self.failures),
        }


def parse_behaviour_tests(raw: Sequence[Mapping[str, Any] | BehaviourTest]) -> list[BehaviourTest]:
    """Validate behaviour test definitions (dicts from the pipeline parameter).

    Raises:
        ConfigError: A definition is invalid or incomplete for its kind, or two share a name;
            the message names the test.
    """
    tests: list[BehaviourTest] = []
    for position, item in enumerate(raw, start=1):
        name = _name_of(item, position)
        try:
            test = BehaviourTest.model_validate(item)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'test'}: {err['msg']}"
                for err in e.errors()
            )
            raise ConfigError(f"behaviour test {name} is invalid: {problems}") from e
        _check_shape(test, name)
        tests.append(test)
    seen = Counter(t.name for t in tests)
    repeated = sorted(n for n, count in seen.items() if count > 1)
    if repeated:
        raise ConfigError(f"behaviour test names must be unique; repeated: {repeated}")
    return tests


def _name_of(item: Mapping[str, Any] | BehaviourTest, position: int) -> str:
    name = item.name if isinstance(item, BehaviourTest) else item.get("name")
    return f"'{name}'" if isinstance(name, str) and name else f"#{position}"


def _check_shape(test: BehaviourTest, name: str) -> None:
    """What the schema cannot say: the fields each kind needs."""
    required = {"mft": ("text", "label"), "directional": ("text", "perturbed", "label")}
    if test.kind == "invariance":
        if "{}" not in test.template:
            raise ConfigError(
                f"behaviour test {name} (invariance) needs a template with a {{}} to fill"
            )
        if len(test.fills) < 2:
            raise ConfigError(
                f"behaviour test {name} (invariance) needs at least two fills to compare"
            )
        return
    if not test.cases:
        raise ConfigError(f"behaviour test {name} ({test.kind}) has no cases")
    for number, case in enumerate(test.cases, start=1):
        missing = [key for key in required[test.kind] if key not in case]
        if missing:
            raise ConfigError(
                f"behaviour test {name} ({test.kind}) case {number} lacks {', '.join(missing)}"
            )
        if test.kind == "directional" and case.get("direction") not in _DIRECTIONS:
            raise ConfigError(
                f"behaviour test {name} case {number}: direction must be 'up' or 'down', "
                f"not {case.get('direction')!r}"
            )


def check_test_labels(tests: Sequence[BehaviourTest], labels: LabelMap) -> None:
    """Every label a test names must be one the model predicts.

    Raises:
        ConfigError: A case names an unknown label; the message names the test.
    """
    for test in tests:
        for number, case in enumerate(test.cases, start=1):
            if "label" not in case:
                continue
            try:
                labels.index(case["label"])
            except DataError as e:
                raise ConfigError(f"behaviour test '{test.name}' case {number}: {e}") from e


def run_behaviour_tests(
    tests: Sequence[BehaviourTest], classifier: ProbabilisticClassifier
) -> list[BehaviourResult]:
    """Run each test on `classifier`, one batched prediction per test."""
    runners = {"mft": _run_mft, "invariance": _run_invariance, "directional": _run_directional}
    results = []
    for test in tests:
        result = runners[test.kind](test, classifier)
        logger.info(
            "behaviour test name=%s kind=%s pass_rate=%.3f passed=%s gate=%s",
            result.name,
            result.kind,
            result.pass_rate,
            result.passed,
            result.gate,
        )
        results.append(result)
    return results


def _result(test: BehaviourTest, outcomes: Sequence[tuple[bool, str]]) -> BehaviourResult:
    failures = tuple(detail for ok, detail in outcomes if not ok)
    return BehaviourResult(
        name=test.name,
        kind=test.kind,
        gate=test.gate,
        cases=len(outcomes),
        passed_cases=sum(ok for ok, _ in outcomes),
        min_pass_rate=test.min_pass_rate,
        failures=failures[:MAX_FAILURE_EXAMPLES],
    )


def _run_mft(test: BehaviourTest, classifier: ProbabilisticClassifier) -> BehaviourResult:
    names = classifier.labels.names
    predicted = classifier.predict_proba([c["text"] for c in test.cases]).argmax(axis=1)
    outcomes = []
    for case, got in zip(test.cases, predicted, strict=True):
        expected = classifier.labels.index(case["label"])
        outcomes.append(
            (
                int(got) == expected,
                f"{case['text']!r}: predicted {names[got]}, expected {names[expected]}",
            )
        )
    return _result(test, outcomes)


def _run_invariance(test: BehaviourTest, classifier: ProbabilisticClassifier) -> BehaviourResult:
    names = classifier.labels.names
    # replace, not str.format: a template may hold other braces, e.g. in code or JSON.
    texts = [test.template.replace("{}", fill) for fill in test.fills]
    predicted = [int(i) for i in classifier.predict_proba(texts).argmax(axis=1)]
    # The most common prediction is the reference: each fill that departs from it is a failure.
    majority = Counter(predicted).most_common(1)[0][0]
    outcomes = [
        (got == majority, f"{text!r}: predicted {names[got]}, most fills {names[majority]}")
        for text, got in zip(texts, predicted, strict=True)
    ]
    return _result(test, outcomes)


def _run_directional(test: BehaviourTest, classifier: ProbabilisticClassifier) -> BehaviourResult:
    probabilities = classifier.predict_proba(
        [c["text"] for c in test.cases] + [c["perturbed"] for c in test.cases]
    )
    before, after = np.split(probabilities, 2)
    outcomes = []
    for case, p_before, p_after in zip(test.cases, before, after, strict=True):
        column = classifier.labels.index(case["label"])
        old, new = float(p_before[column]), float(p_after[column])
        moved = new > old if case["direction"] == "up" else new < old
        outcomes.append(
            (
                moved,
                f"{case['text']!r} -> {case['perturbed']!r}: p({case['label']}) "
                f"{old:.3f} -> {new:.3f}, expected {case['direction']}",
            )
        )
    return _result(test, outcomes)
