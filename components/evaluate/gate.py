"""The gate's rules: from scores, the champion and behavioural tests to a decision with reasons.

Pure logic, no models: every rule can be tested with numbers. A decision always carries at
least one sentence a person can read in the KFP UI, whether the model ships or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from textops.components.common.labels import LabelSetChange
from textops.components.common.settings import GateSettings
from textops.components.evaluate.baseline import BASELINE_NAME, BaselineResult
from textops.components.evaluate.behaviour import BehaviourResult
from textops.components.evaluate.scoring import ModelScores

# Scores are means of counts; a floor of 0.6 must not fail on a 0.59999999999 rounding.
_TOLERANCE = 1e-9

ChampionStatus = Literal["none", "scored", "labels_differ", "unreadable"]


@dataclass(frozen=True)
class ChampionResult:
    """What became of the model in production: none, scored, or why it could not be compared."""

    status: ChampionStatus
    version: int | None = None
    path: Path | None = None
    labels: tuple[str, ...] = ()
    scores: ModelScores | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the decision file."""
        return {
            "status": self.status,
            "version": self.version,
            "path": str(self.path) if self.path is not None else None,
            "labels": list(self.labels),
            "scores": self.scores.scalars() if self.scores is not None else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class Check:
    """One rule's outcome. A check that did not pass and `blocks` keeps the model back."""

    name: str
    passed: bool
    blocks: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the decision file."""
        return asdict(self)


@dataclass(frozen=True)
class ProductionResult:
    """Both models scored on the production test set: feedback held out, never trained on."""

    challenger: ModelScores
    champion: ChampionResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the decision file."""
        return {"challenger": self.challenger.scalars(), "champion": self.champion.to_dict()}


@dataclass(frozen=True)
class Decision:
    """Whether the challenger ships, and every check behind it."""

    deploy: bool
    checks: tuple[Check, ...]

    @property
    def reasons(self) -> list[str]:
        """The checks' sentences, those that kept the model back first."""
        blocking = [c.reason for c in self.checks if c.blocks and not c.passed]
        return blocking + [c.reason for c in self.checks if not (c.blocks and not c.passed)]


def decide(
    settings: GateSettings,
    challenger: ModelScores,
    champion: ChampionResult,
    behaviour: Sequence[BehaviourResult] = (),
    notes: Sequence[str] = (),
    production: ProductionResult | None = None,
    baseline: BaselineResult | None = None,
) -> Decision:
    """Apply the floors, the champion comparisons, the baseline margin and the behaviour tests.

    Args:
        settings: The bars.
        challenger: The new model's scores on the test split.
        champion: The model in production, scored on the same split, or why it was not.
        behaviour: Results of the behavioural tests run on the new model.
        notes: Problems worth a reader's attention that do not block shipping.
        production: Both models scored on the production test set, when it has rows.
        baseline: The linear baseline scored on the same test split; no check when None.
    """
    checks = [
        _floor("accuracy", challenger.accuracy, settings.min_accuracy),
        _floor("macro-F1", challenger.macro_f1, settings.min_macro_f1),
        _champion_check(settings, challenger, champion),
        *([] if production is None else [_production_check(settings, production)]),
        *([] if baseline is None else [_baseline_check(settings, challenger, baseline)]),
        *_behaviour_checks(behaviour),
        *(Check("note", False, False, note) for note in notes),
    ]
    deploy = all(c.passed or not c.blocks for c in checks)
    return Decision(deploy=deploy, checks=tuple(checks))


def _floor(name: str, value: float, floor: float) -> Check:
    passed = value + _TOLERANCE >= floor
    relation = ">=" if passed else "<"
    return Check(
        name=f"{name} floor",
        passed=passed,
        blocks=True,
        reason=f"{name} {value:.3f} {relation} floor {floor:.3f}",
    )


def _names(labels: Sequence[str]) -> str:
    return "[" + ", ".join(labels) + "]"


def _champion_check(
    settings: GateSettings, challenger: ModelScores, champion: ChampionResult
) -> Check:
    if champion.status == "none":
        return Check("champion", True, True, "no model in production yet: compared to floors only")
    if champion.status == "unreadable":
        which = f"version {champion.version}, " if champion.version is not None else ""
        return Check(
            "champion",
            False,
            True,
            f"the model in production ({which}{champion.path}) could not be scored: "
            f"{champion.error}. Nothing ships without that comparison: restore it, or point "
            "current.json at a complete version, then run again",
        )
    if champion.status == "labels_differ":
        production = f"v{champion.version}" if champion.version is not None else "model"
        change = LabelSetChange.between(champion.labels, challenger.labels)
        sets = (
            f"production {production} has {_names(champion.labels)}, the new model has "
            f"{_names(challenger.labels)}: {change.describe()}"
        )
        if settings.enforce_production_labels:
            return Check(
                "champion",
                False,
                True,
                f"label sets differ: {sets}; enforce_production_labels is on, so the new model "
                "does not ship (run with --no-enforce-production-labels to change the label "
                "set on purpose)",
            )
        return Check(
            "champion",
            True,
            True,
            f"label sets differ ({sets}) and enforce_production_labels is off: compared to "
            "floors only",
        )
    if champion.scores is None:  # "scored" always carries scores; guard for mypy and misuse
        raise ValueError("a scored champion needs its scores")
    regression = champion.scores.macro_f1 - challenger.macro_f1
    passed = regression <= settings.max_regression + _TOLERANCE
    sentence = (
        f"champion v{champion.version} macro-F1 {champion.scores.macro_f1:.3f}, regression "
        f"{regression:+.3f} {'<=' if passed else '>'} {settings.max_regression:.3f}"
    )
    if not passed:
        sentence += ": the new model is worse than the one serving, which stays"
    return Check("champion", passed, True, sentence)


def _production_check(settings: GateSettings, production: ProductionResult) -> Check:
    """The challenger's accuracy on production traffic against the champion's there."""
    new = production.challenger.accuracy
    where = f"on production traffic ({production.challenger.rows} rows): accuracy {new:.3f}"
    champion = production.champion
    if champion.status != "scored" or champion.scores is None:
        return Check(
            "production",
            True,
            True,
            f"{where}; no model in production scored there: reported, not compared",
        )
    regression = champion.scores.accuracy - new
    passed = regression <= settings.max_production_regression + _TOLERANCE
    sentence = (
        f"{where}, champion v{champion.version} {champion.scores.accuracy:.3f}, regression "
        f"{regression:+.3f} {'<=' if passed else '>'} {settings.max_production_regression:.3f}"
    )
    if not passed:
        sentence += (
            ": the new model is worse on production traffic than the one serving, which stays"
        )
    return Check("production", passed, True, sentence)


def baseline_gate_on(settings: GateSettings) -> bool:
    """Whether the baseline margin gates: -1, the lowest margin, can never fail, so it is off."""
    return settings.min_margin_over_baseline > -1


def _baseline_check(
    settings: GateSettings, challenger: ModelScores, baseline: BaselineResult
) -> Check:
    """The challenger's macro-F1 against the linear baseline's plus min_margin_over_baseline."""
    gates = baseline_gate_on(settings)
    margin = settings.min_margin_over_baseline
    if baseline.scores is None:
        return Check(
            "baseline",
            not gates,
            gates,
            f"no {BASELINE_NAME} baseline: {baseline.error}"
            + (f"; min_margin_over_baseline is {margin:.3f}, so nothing ships" if gates else ""),
        )
    new, old = challenger.macro_f1, baseline.scores.macro_f1
    where = f"baseline ({BASELINE_NAME}) macro-F1 {old:.3f}, new model {new:.3f} ({new - old:+.3f})"
    if not gates:
        return Check(
            "baseline", True, False, f"{where}: reported only, min_margin_over_baseline is off"
        )
    passed = new - old + _TOLERANCE >= margin
    sentence = f"{where} {'>=' if passed else '<'} min_margin_over_baseline {margin:+.3f}" + (
        "" if passed else ": the new model does not beat the linear baseline by the margin"
    )
    return Check("baseline", passed, True, sentence)


def _behaviour_checks(results: Sequence[BehaviourResult]) -> list[Check]:
    failed = [r for r in results if not r.passed]
    checks = [Check(f"behaviour: {r.name}", False, r.gate, r.sentence()) for r in failed]
    if results and not failed:
        checks.append(Check("behaviour", True, True, f"behaviour tests: all {len(results)} passed"))
    return checks
