"""The validation result and its renderings: JSON, a one-page HTML report, a Markdown summary.

All three are written whether the data passed or not, so a failed run still explains itself.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["critical", "warning"]

#: Characters of a text kept in an example: enough to recognise the row, and short enough for
#: a one-page report, also when the text is 100 kB long.
EXAMPLE_CHARS = 200


def clip(value: str | None, limit: int = EXAMPLE_CHARS) -> str | None:
    """`value` cut to `limit` characters, saying how long it was."""
    if value is None or len(value) <= limit:
        return value
    return f"{value[: limit - 1]}… ({len(value)} characters)"


@dataclass(frozen=True)
class Example:
    """One offending row: its 1-based position among the data rows, its text and its label.

    Text and label are clipped to `EXAMPLE_CHARS` characters (see `clip`).
    """

    row: int
    text: str | None
    label: str | None


@dataclass(frozen=True)
class Finding:
    """The outcome of one check on the data.

    Attributes:
        check: The check's name in textops, e.g. `text_not_null`.
        expectation: The Great Expectations expectation type that ran.
        column: The user's column it looked at; None for table-level checks.
        severity: `critical` fails the step; `warning` is only reported.
        success: Whether the expectation held.
        observed: What was found, in words, e.g. "2 of 10 rows null (rows 3, 7)".
        examples: Up to five offending rows.
    """

    check: str
    expectation: str
    column: str | None
    severity: Severity
    success: bool
    observed: str
    examples: tuple[Example, ...] = ()

    def describe(self) -> str:
        """One line naming the check, its expectation, its column and what was observed."""
        where = f" on {self.column!r}" if self.column is not None else ""
        return f"{self.check} ({self.expectation}){where}: {self.observed}"


@dataclass
class ValidationResult:
    """Everything the validate step found about one data set.

    Attributes:
        source: The data that was read (a path or URI).
        success: True when no critical check failed.
        rows: Number of data rows read.
        rows_valid: Rows whose text is valid: the rows written when validation passes.
        invalid_texts: Rows per reason their text is invalid (`null`, `blank`, `too short`,
            `too long`); within the `text_mostly` allowance these rows are dropped.
        label_counts: Rows per label, labels in their canonical string form.
        redactions: Personal data replaced in the texts, per kind; empty when redaction is off.
        settings: The thresholds the data was held to.
        findings: One entry per check, in the order the checks were declared.
        error: Why the data could not be checked at all (unreadable, bad settings), or None.
        lineage: What the validated data was made of: the base data and its fingerprint,
            and each feedback snapshot merged (uri, fingerprint, window, rows used and held
            out); empty when the data could not be read.
    """

    source: str
    success: bool
    rows: int
    rows_valid: int = 0
    invalid_texts: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    redactions: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_dropped(self) -> int:
        """Rows left out of the validated data because their text is invalid."""
        return self.rows - self.rows_valid if self.success else 0

    @property
    def failed_critical(self) -> list[Finding]:
        """The critical checks that failed."""
        return [f for f in self.findings if not f.success and f.severity == "critical"]

    @property
    def failed_warnings(self) -> list[Finding]:
        """The warning checks that failed."""
        return [f for f in self.findings if not f.success and f.severity == "warning"]

    def metadata(self) -> dict[str, Any]:
        """JSON-friendly values for the KFP artifact's metadata."""
        return {
            "rows": self.rows,
            "rows_valid": self.rows_valid,
            "rows_dropped": self.rows_dropped,
            "success": self.success,
            "label_counts": dict(self.label_counts),
            "redactions": dict(self.redactions),
            "failed_critical_checks": len(self.failed_critical),
            "failed_warning_checks": len(self.failed_warnings),
            "lineage": dict(self.lineage),
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole result as JSON-friendly values: settings, counts, findings, success."""
        return {
            "source": self.source,
            "success": self.success,
            "error": self.error,
            "settings": dict(self.settings),
            "counts": {
                "rows": self.rows,
                "rows_valid": self.rows_valid,
                "rows_dropped": self.rows_dropped,
                "invalid_texts": dict(self.invalid_texts),
                "labels": dict(self.label_counts),
                "redactions": dict(self.redactions),
            },
            "findings": [asdict(f) for f in self.findings],
        }


def write_outputs(
    result: ValidationResult, *, result_path: str, report_path: str, summary_path: str
) -> None:
    """Write the JSON result, the HTML report and the Markdown summary, creating folders.

    Args:
        result: What validation found.
        result_path: Where the JSON result goes.
        report_path: Where the one-page HTML report goes.
        summary_path: Where the short Markdown summary goes.
    """
    documents = (
        (result_path, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"),
        (report_path, render_html(result)),
        (summary_path, render_markdown(result)),
    )
    for path, text in documents:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")


def _status(result: ValidationResult) -> str:
    if result.success:
        return "passed with warnings" if result.failed_warnings else "passed"
    return "failed"


def _outcome(finding: Finding) -> str:
    if finding.success:
        return "pass"
    return "FAIL" if finding.severity == "critical" else "warn"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.4rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .35rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.pass { color: #1a7f37; } .warn { color: #9a6700; } .FAIL { color: #cf222e; font-weight: bold; }
.status-passed, .status-passed-with-warnings { color: #1a7f37; } .status-failed { color: #cf222e; }
.examples { font-size: .85rem; } .examples li { margin: .15rem 0; }
code { background: #f6f8fa; padding: 0 .2rem; }
pre { background: #fff0f0; padding: .6rem; white-space: pre-wrap; }
"""


def _shown(value: str | None) -> str:
    # Examples arrive clipped (see `clip`), so the report only needs to show missing values.
    return "(null)" if value is None else value


def _counts(result: ValidationResult) -> list[tuple[str, str]]:
    """(name, value) rows of the counts table."""
    rows = [("rows read", str(result.rows))]
    if result.error is None:
        rows.append(("rows with a valid text", str(result.rows_valid)))
        if result.success:
            rows.append(("rows dropped", str(result.rows_dropped)))
    if result.invalid_texts:
        reasons = ", ".join(f"{k}: {v}" for k, v in result.invalid_texts.items())
        rows.append(("invalid texts", reasons))
    if result.redactions:
        kinds = ", ".join(f"{k}: {v}" for k, v in result.redactions.items())
        rows.append(("personal data redacted", kinds))
    return rows


def _examples_html(examples: tuple[Example, ...]) -> str:
    if not examples:
        return ""
    items = "".join(
        f"<li>row {e.row}: <code>{html.escape(_shown(e.text))}</code> "
        f"→ <code>{html.escape(_shown(e.label))}</code></li>"
        for e in examples
    )
    return f'<ul class="examples">{items}</ul>'


def render_html(result: ValidationResult) -> str:
    """A self-contained one-page HTML report; every user-supplied string is escaped."""
    status = _status(result)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>textops data validation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Data validation: "
        f'<span class="status-{status.replace(" ", "-")}">{html.escape(status)}</span></h1>',
        f"<p>Source: <code>{html.escape(result.source)}</code></p>",
        "<table>"
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in _counts(result)
        )
        + "</table>",
    ]
    if result.error is not None:
        parts.append(
            f"<h2>The data could not be checked</h2><pre>{html.escape(result.error)}</pre>"
        )
    if result.label_counts:
        rows = "".join(
            f"<tr><td>{html.escape(label)}</td><td>{count}</td></tr>"
            for label, count in result.label_counts.items()
        )
        parts.append(f"<h2>Labels</h2><table><tr><th>label</th><th>rows</th></tr>{rows}</table>")
    if result.findings:
        rows = "".join(
            "<tr>"
            f"<td>{html.escape(f.check)}<br><small>{html.escape(f.expectation)}</small></td>"
            f"<td>{html.escape(f.column) if f.column is not None else '(table)'}</td>"
            f"<td>{f.severity}</td>"
            f'<td class="{_outcome(f)}">{_outcome(f)}</td>'
            f"<td>{html.escape(f.observed)}{_examples_html(f.examples)}</td>"
            "</tr>"
            for f in result.findings
        )
        parts.append(
            "<h2>Expectations</h2><table><tr><th>check</th><th>column</th><th>severity</th>"
            f"<th>result</th><th>observed</th></tr>{rows}</table>"
            "<p><small>Rows are counted from 1 over the data rows, header excluded. A critical "
            "failure stops the pipeline; a warning is only reported.</small></p>"
        )
    if result.settings:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(json.dumps(v))}</code></td></tr>"
            for k, v in result.settings.items()
        )
        parts.append(f"<h2>Settings</h2><table>{rows}</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _cell(text: str) -> str:
    # A pipe or a line break inside a cell would break the Markdown table.
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def render_markdown(result: ValidationResult) -> str:
    """A short Markdown summary: status, rows, labels and one table row per check."""
    labels = ", ".join(f"{_cell(k)}: {v}" for k, v in result.label_counts.items()) or "none"
    lines = [
        f"## Data validation: {_status(result)}",
        "",
        f"- source: `{_cell(result.source)}`",
        *(f"- {name}: {_cell(value)}" for name, value in _counts(result)),
        f"- labels: {labels}",
    ]
    if result.error is not None:
        lines += ["", f"**The data could not be checked:** {_cell(result.error)}"]
    if result.findings:
        lines += [
            "",
            "| check | column | severity | result | observed |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {f.check} | {_cell(f.column) if f.column is not None else '(table)'} | "
            f"{f.severity} | {_outcome(f)} | {_cell(f.observed)} |"
            for f in result.findings
        ]
    return "\n".join(lines) + "\n"
