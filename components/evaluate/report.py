"""The evaluation's two faces in the KFP UI: a self-contained HTML report and a Markdown summary.

The decision and its reasons come first in both. All text from data or configuration (labels,
test texts, behaviour test names, slice values, error messages) is escaped: a test text such as
`<script>` must show as text, not run in the reader's browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.evaluate.baseline import BASELINE_NAME
from textops.components.evaluate.charts import confusion_svg, reliability_svg, roc_svg

if TYPE_CHECKING:
    from textops.components.evaluate.evaluation import EvaluationOutcome

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#111}
table{border-collapse:collapse;margin:.6em 0 1.4em}
td,th{border:1px solid #ccc;padding:3px 9px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.8em 1.2em;border-radius:6px;margin-bottom:1em}
.ship{background:#e5f5e0;border:1px solid #41ab5d}.hold{background:#fee0d2;border:1px solid #cb181d}
.fail{color:#a50f15;font-weight:600}.pass{color:#006d2c}
.charts{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
figure{margin:0}figcaption{font-size:.9em;color:#555;max-width:32em}
"""

# Markdown's own punctuation, backslash-escaped so that a test text cannot format the summary.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]|])")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table; cells must already be escaped (numbers are marked class="n")."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{_numeric(c)}>{c}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _numeric(cell: str) -> str:
    return ' class="n"' if re.fullmatch(r"[-+]?[0-9.,%]+", cell) else ""


def _baseline_scalars(outcome: EvaluationOutcome) -> dict[str, float] | None:
    baseline = outcome.baseline
    if baseline is None or baseline.scores is None:
        return None
    return baseline.scores.scalars()


def _scores_header(outcome: EvaluationOutcome) -> list[str]:
    header = ["metric", "new model"]
    if outcome.champion.scores is not None:
        header += [f"production v{outcome.champion.version}", "difference"]
    if _baseline_scalars(outcome) is not None:
        header += ["baseline", "over baseline"]
    return header


def _scores_rows(outcome: EvaluationOutcome) -> list[list[str]]:
    new = outcome.scores.scalars()
    old = outcome.champion.scores.scalars() if outcome.champion.scores is not None else None
    baseline = _baseline_scalars(outcome)
    rows = []
    for name, value in new.items():
        if name == "test_rows":
            continue
        row = [escape(name), f"{value:.4f}"]
        for other in (old, baseline):
            if other is not None:
                row += [f"{other[name]:.4f}", f"{value - other[name]:+.4f}"]
        rows.append(row)
    return rows


def _baseline_html(outcome: EvaluationOutcome) -> str:
    """What the baseline is, what it learned from, and what it cost; or why there is none."""
    baseline = outcome.baseline
    if baseline is None:
        return ""
    if baseline.scores is None:
        return f'<p class="fail">No {BASELINE_NAME} baseline: {escape(baseline.error)}</p>'
    return (
        f"<p>The baseline is {BASELINE_NAME} (unigrams and bigrams, {baseline.features} "
        f"features), trained on {baseline.train_rows} rows of the same train split as the new "
        f"model and scored on the same test texts, in {baseline.seconds:.1f} s. A transformer "
        "that does not beat it is not worth its cost.</p>"
    )


def _decision_html(outcome: EvaluationOutcome) -> str:
    verdict = "Ships" if outcome.deploy else "Does not ship"
    items = "".join(
        f'<li class="{"pass" if c.passed else "fail" if c.blocks else ""}">'
        f"{'✓' if c.passed else '✗' if c.blocks else '!'} {escape(c.reason)}</li>"
        for c in sorted(outcome.decision.checks, key=lambda c: (c.passed, not c.blocks))
    )
    return (
        f'<div class="verdict {"ship" if outcome.deploy else "hold"}"><h2>Decision: {verdict}'
        f"</h2><ul>{items}</ul></div>"
    )


def _champion_html(outcome: EvaluationOutcome) -> str:
    champion = outcome.champion
    if champion.status == "scored":
        return (
            f"<p>Compared with the model in production, version {champion.version} "
            f"({escape(str(champion.path))}), scored on the same test texts.</p>"
        )
    if champion.status == "none":
        return "<p>No model is in production yet.</p>"
    if champion.status == "labels_differ":
        return (
            f"<p>The model in production, version {champion.version}, predicts other labels: "
            f"{escape(', '.join(champion.labels))}.</p>"
        )
    return (
        f'<p class="fail">The model in production could not be scored ({escape(str(champion.path))}'
        f"): {escape(champion.error)}</p>"
    )


def _production_html(outcome: EvaluationOutcome) -> str:
    """Both models' scores on the held-out production traffic, or why there are none."""
    production = outcome.production
    title = "<h2>On production traffic</h2>"
    if production is None:
        return title + (
            "<p>No production test rows: no labelled feedback was held out, so the gate "
            "judged on the base test split only.</p>"
        )
    old = production.champion.scores
    header = ["metric", "new model"]
    if old is not None:
        header += [f"production v{production.champion.version}", "difference"]
    rows = []
    for name in ("accuracy", "macro_f1"):
        value = getattr(production.challenger, name)
        row = [name, f"{value:.4f}"]
        if old is not None:
            row += [f"{getattr(old, name):.4f}", f"{value - getattr(old, name):+.4f}"]
        rows.append(row)
    return (
        title + f"<p>{production.challenger.rows} held-out rows of labelled production traffic, "
        "never trained on.</p>" + _table(header, rows)
    )


def _charts_html(outcome: EvaluationOutcome) -> str:
    figures = [
        f"<figure>{confusion_svg(outcome.labels, outcome.confusion_matrix)}<figcaption>Confusion "
        "matrix: rows are true labels, columns predicted; shade is the share of the true "
        "class.</figcaption></figure>",
        *_reliability_figures(outcome),
    ]
    if outcome.roc is not None:
        figures.append(
            f"<figure>{roc_svg(outcome.roc)}<figcaption>ROC curve of "
            f"{escape(outcome.roc.positive_label)} against the rest.</figcaption></figure>"
        )
    return f'<div class="charts">{"".join(figures)}</div>'


def _reliability_figures(outcome: EvaluationOutcome) -> list[str]:
    """The reliability diagram of the raw model and, when calibrated, the one after."""
    legend = "accuracy per confidence bin; bars below the diagonal are over-confident"
    calibration = outcome.calibration
    if calibration is None:
        return [
            f"<figure>{reliability_svg(outcome.scores.calibration)}<figcaption>Reliability: "
            f"{legend}. ECE {outcome.scores.ece:.4f}.</figcaption></figure>"
        ]
    return [
        f"<figure>{reliability_svg(calibration.bins_before)}<figcaption>Reliability before "
        f"calibration: {legend}. ECE {calibration.ece_before:.4f}, NLL "
        f"{calibration.nll_before:.4f}.</figcaption></figure>",
        f"<figure>{reliability_svg(calibration.bins_after)}<figcaption>Reliability after "
        f"calibration (logits / {calibration.temperature:.3f}, the temperature fitted on "
        f"{calibration.validation_rows} validation rows; what the bundle serves). ECE "
        f"{calibration.ece_after:.4f}, NLL {calibration.nll_after:.4f}.</figcaption></figure>",
    ]


def _calibration_note(outcome: EvaluationOutcome) -> str:
    """Which ECE the Scores table shows: the new model's before calibration, the others' as
    they answer (a calibrated production bundle answers calibrated)."""
    fitted = outcome.calibration
    if fitted is None:
        return ""
    return (
        f"<p>The new model's ece is before calibration; it serves with its logits divided by "
        f"{fitted.temperature:.3f}, which gives ece {fitted.ece_after:.4f} on these rows "
        "(Reliability, below). Calibration changes no prediction, so every other score is the "
        "same either way.</p>"
    )


def _slices_html(outcome: EvaluationOutcome) -> str:
    report = outcome.slices
    if report is None:
        return ""
    worst = report.worst.value if report.worst is not None else None
    rows = [
        [
            escape(s.value) + (" <b>(worst)</b>" if s.value == worst else ""),
            str(s.rows),
            f"{s.accuracy:.4f}",
            f"{s.macro_f1:.4f}",
        ]
        for s in report.slices
    ]
    return f"<h2>Slices by {escape(report.column)}</h2>" + _table(
        ["slice", "rows", "accuracy", "macro-F1"], rows
    )


def _behaviour_html(outcome: EvaluationOutcome) -> str:
    if not outcome.behaviour:
        return "<h2>Behaviour tests</h2><p>None configured.</p>"
    rows = [
        [
            escape(r.name),
            escape(r.kind),
            "yes" if r.gate else "no",
            f"{r.passed_cases}/{r.cases}",
            f"{r.min_pass_rate:.0%}",
            '<span class="pass">passed</span>' if r.passed else '<span class="fail">FAILED</span>',
            "<br>".join(escape(f) for f in r.failures),
        ]
        for r in outcome.behaviour
    ]
    return "<h2>Behaviour tests</h2>" + _table(
        ["test", "kind", "gates", "passed", "required", "result", "failing cases"], rows
    )


def render_html(outcome: EvaluationOutcome) -> str:
    """The whole report as one HTML page with inline SVG charts and no external resources."""
    per_class = [
        [escape(c.label), f"{c.precision:.4f}", f"{c.recall:.4f}", f"{c.f1:.4f}", str(c.support)]
        for c in outcome.scores.per_class
    ]
    mistakes = [
        [escape(m.text), escape(m.true_label), escape(m.predicted_label), f"{m.confidence:.3f}"]
        for m in outcome.mistakes
    ]
    sections = [
        f"<h1>Evaluation of {escape(outcome.model_name)}</h1>",
        _decision_html(outcome),
        f"<p>{outcome.scores.rows} held-out test rows.</p>",
        _champion_html(outcome),
        "<h2>Scores</h2>",
        _baseline_html(outcome),
        _table(_scores_header(outcome), _scores_rows(outcome)),
        _calibration_note(outcome),
        _production_html(outcome),
        _charts_html(outcome),
        "<h2>Per class</h2>",
        _table(["label", "precision", "recall", "F1", "support"], per_class),
        _slices_html(outcome),
        _behaviour_html(outcome),
        "<h2>Most confident mistakes</h2>",
        _table(["text", "true", "predicted", "confidence"], mistakes)
        if mistakes
        else "<p>None: every test row was predicted right.</p>",
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>textops evaluation: {escape(outcome.model_name)}</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell: no HTML, no Markdown syntax, one line."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", escape(one_line, quote=False))


def render_markdown(outcome: EvaluationOutcome) -> str:
    """A short summary for the KFP UI: the decision, its reasons, headline scores, tests."""
    lines = [
        f"# {_md(outcome.model_name)}: {'ships' if outcome.deploy else 'does not ship'}",
        "",
        *(f"- {_md(reason)}" for reason in outcome.reasons),
        "",
    ]
    champion = outcome.champion.scores
    baseline = outcome.baseline.scores if outcome.baseline is not None else None
    header = (
        "| metric | new model |"
        + (f" production v{outcome.champion.version} |" if champion else "")
        + (" baseline |" if baseline else "")
    )
    lines += [header, "|---|---|" + ("---|" if champion else "") + ("---|" if baseline else "")]
    for name in ("accuracy", "macro_f1", "weighted_f1", "ece"):
        value = getattr(outcome.scores, name)
        old = f" {getattr(champion, name):.4f} |" if champion else ""
        linear = f" {getattr(baseline, name):.4f} |" if baseline else ""
        lines.append(f"| {name} | {value:.4f} |{old}{linear}")
    lines += ["", f"Test rows: {outcome.scores.rows}."]
    if outcome.calibration is not None:
        fitted = outcome.calibration
        lines.append(
            f"Calibration: temperature {fitted.temperature:.3f} fitted on "
            f"{fitted.validation_rows} validation rows; test ECE {fitted.ece_before:.4f} before, "
            f"{fitted.ece_after:.4f} after (served probabilities are calibrated)."
        )
    if baseline is not None:
        lines.append(f"Baseline: {BASELINE_NAME} trained on the same train split.")
    lines += _production_markdown(outcome)
    if outcome.slices is not None and outcome.slices.worst is not None:
        worst = outcome.slices.worst
        lines.append(
            f"Worst slice by {_md(outcome.slices.column)}: {_md(worst.value)} "
            f"(macro-F1 {worst.macro_f1:.4f}, {worst.rows} rows)."
        )
    if outcome.behaviour:
        lines += [
            "",
            "| behaviour test | kind | passed | required | gates |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {_md(r.name)} | {r.kind} | {r.passed_cases}/{r.cases} | {r.min_pass_rate:.0%} "
            f"| {'yes' if r.gate else 'no'} |"
            for r in outcome.behaviour
        ]
    lines += ["", "The HTML report has the charts, per-class and slice tables, and mistakes."]
    return "\n".join(lines) + "\n"


def _production_markdown(outcome: EvaluationOutcome) -> list[str]:
    """The summary's lines on production traffic: both accuracies, or that there was none."""
    production = outcome.production
    if production is None:
        return ["On production traffic: no held-out rows."]
    new = production.challenger
    line = (
        f"On production traffic ({new.rows} held-out rows): accuracy {new.accuracy:.4f}, "
        f"macro-F1 {new.macro_f1:.4f}"
    )
    old = production.champion.scores
    if old is not None:
        line += (
            f"; production v{production.champion.version}: accuracy {old.accuracy:.4f}, "
            f"macro-F1 {old.macro_f1:.4f}"
        )
    return [line + "."]


def write_text(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8, creating parent directories (KFP output paths may lack them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
