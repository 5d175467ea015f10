"""Inline SVG charts for the evaluation report: no plotting library, no files beside the page.

Every piece of text that comes from data (label names) is escaped here, so a label such as
`<script>` shows as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from textops.components.evaluate.scoring import CalibrationBin, RocCurve

_FONT = 'font-family="sans-serif" font-size="11"'
_LONGEST_LABEL = 18


def _short(label: str) -> str:
    """A label cut to fit beside the chart; the tables carry the full names."""
    text = label if len(label) <= _LONGEST_LABEL else label[: _LONGEST_LABEL - 1] + "…"
    return escape(text)


def _blue(share: float) -> str:
    """White (0) to a deep blue (1), for heat-map cells."""
    share = min(max(share, 0.0), 1.0)
    red, green, blue = (round(255 - share * (255 - c)) for c in (8, 69, 148))
    return f"rgb({red},{green},{blue})"


def confusion_svg(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """A heat map of the confusion matrix, each cell shaded by its share of its true class.

    Shading by row (recall) rather than by raw count keeps small classes' errors visible.
    """
    count = len(labels)
    cell = max(18, min(56, 480 // max(count, 1)))
    left, top = 130, 110
    width, height = left + cell * count + 10, top + cell * count + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="confusion matrix" {_FONT}>',
        f'<text x="{left + cell * count / 2}" y="12" text-anchor="middle">predicted</text>',
        f'<text x="12" y="{top + cell * count / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + cell * count / 2})">true</text>',
    ]
    for j, name in enumerate(labels):
        x = left + j * cell + cell / 2
        parts.append(
            f'<text x="{x}" y="{top - 6}" transform="rotate(-45 {x} {top - 6})">'
            f"{_short(name)}</text>"
        )
    for i, (name, row) in enumerate(zip(labels, matrix, strict=True)):
        y = top + i * cell
        parts.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">{_short(name)}</text>'
        )
        total = sum(row)
        for j, value in enumerate(row):
            share = value / total if total else 0.0
            ink = "#fff" if share > 0.55 else "#111"
            x = left + j * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_blue(share)}" '
                f'stroke="#ccc"><title>true {escape(name)}, predicted {escape(labels[j])}: '
                f"{value} ({share:.0%} of the true class)</title></rect>"
            )
            if cell >= 24:
                parts.append(
                    f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                    f'fill="{ink}">{value}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def _axes(size: int, pad: int, x_title: str, y_title: str) -> list[str]:
    """Square axes from 0 to 1 with ticks every 0.2 and the diagonal, in a `pad` margin."""
    parts = [
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#888"/>',
        f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#bbb" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{pad + size / 2}" y="{pad + size + 30}" text-anchor="middle">{x_title}</text>',
        f'<text x="12" y="{pad + size / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad + size / 2})">{y_title}</text>',
    ]
    for step in range(6):
        value = step / 5
        x, y = pad + value * size, pad + size - value * size
        parts.append(f'<text x="{x}" y="{pad + size + 14}" text-anchor="middle">{value:.1f}</text>')
        parts.append(f'<text x="{pad - 4}" y="{y + 4}" text-anchor="end">{value:.1f}</text>')
    return parts


def reliability_svg(bins: Sequence[CalibrationBin]) -> str:
    """A reliability diagram: accuracy per confidence bin against the diagonal.

    Bars under the diagonal mean over-confidence; a bar's opacity grows with its row count, so
    bins holding a handful of rows do not draw the eye.
    """
    size, pad = 260, 40
    most = max((b.rows for b in bins), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" '
        f'height="{size + 2 * pad}" role="img" aria-label="reliability diagram" {_FONT}>',
        *_axes(size, pad, "confidence", "accuracy"),
    ]
    for b in bins:
        if b.rows == 0:
            continue
        x = pad + b.lower * size
        bar = b.accuracy * size
        width = (b.upper - b.lower) * size - 2
        opacity = 0.35 + 0.65 * b.rows / most
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{pad + size - bar:.1f}" width="{width:.1f}" '
            f'height="{bar:.1f}" fill="#2171b5" fill-opacity="{opacity:.2f}"><title>confidence '
            f"{b.lower:.2f}-{b.upper:.2f}: {b.rows} rows, accuracy {b.accuracy:.3f}, mean "
            f"confidence {b.confidence:.3f}</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def roc_svg(roc: RocCurve) -> str:
    """The ROC curve of a binary task, with the chance diagonal."""
    size, pad = 260, 40
    points = " ".join(
        f"{pad + f * size:.1f},{pad + size - t * size:.1f}"
        for f, t in zip(roc.fpr, roc.tpr, strict=True)
    )
    return "".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" '
            f'height="{size + 2 * pad}" role="img" aria-label="ROC curve" {_FONT}>',
            *_axes(size, pad, "false positive rate", "true positive rate"),
            f'<polyline points="{points}" fill="none" stroke="#cb181d" stroke-width="2"/>',
            f'<text x="{pad + size - 6}" y="{pad + size - 8}" text-anchor="end">'
            f"AUC {roc.auc:.3f} (positive: {_short(roc.positive_label)})</text>",
            "</svg>",
        ]
    )
