"""The HTML report and the Markdown summary: decision first, self-contained, all text escaped."""

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from textops.components.common.settings import GateSettings
from textops.components.evaluate.behaviour import BehaviourResult
from textops.components.evaluate.evaluation import EvaluationOutcome
from textops.components.evaluate.gate import ChampionResult, decide
from textops.components.evaluate.report import render_html, render_markdown
from textops.components.evaluate.scoring import (
    confident_mistakes,
    roc_curve_points,
    score_model,
    slice_scores,
)

EVIL = "<script>alert('x')</script>"
SETTINGS = GateSettings(
    min_accuracy=0.0, min_macro_f1=0.5, max_regression=0.01, enforce_production_labels=True
)


def outcome(
    champion: ChampionResult, *, labels: tuple[str, ...] = ("ham", "spam")
) -> EvaluationOutcome:
    """An outcome built from toy predictions, with hostile text wherever text can come from."""
    y = [0, 0, 1, 1, 1, 0]
    probabilities = np.array(
        [[0.2, 0.8], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9], [0.8, 0.2]]
    )
    texts = [f"{EVIL} buy now", "ok", "win | *money*", "hello", "free", "see you"]
    scores = score_model(y, probabilities, labels)
    behaviour = (
        BehaviourResult(
            f"names {EVIL}", "invariance", True, 4, 1, 1.0, (f"{EVIL}: predicted spam",)
        ),
    )
    return EvaluationOutcome(
        model_name="spam-filter",
        scores=scores,
        roc=roc_curve_points(y, probabilities, labels),
        slices=slice_scores(y, probabilities, [EVIL] * 5 + ["web"], "channel"),
        mistakes=tuple(confident_mistakes(texts, y, probabilities, labels)),
        behaviour=behaviour,
        champion=champion,
        decision=decide(SETTINGS, scores, champion, behaviour),
        settings=SETTINGS,
    )


class _Collector(HTMLParser):
    """Tags and attributes of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in {"src", "href"} and v]


def parse(page: str) -> _Collector:
    collector = _Collector()
    collector.feed(page)
    return collector


def test_the_decision_and_its_reasons_come_first() -> None:
    page = render_html(outcome(ChampionResult("none")))
    verdict = page.index("Decision: Does not ship")
    assert verdict < page.index("<h2>Scores</h2>")
    # The gating behaviour test failed; its reason is listed in the verdict box, first.
    reasons = page[verdict : page.index("</div>", verdict)]
    assert reasons.index("FAILED") < reasons.index("no model in production yet")


def test_text_from_data_is_escaped_everywhere() -> None:
    champion = ChampionResult("unreadable", 2, Path("/m/2"), error=f"bad graph {EVIL}")
    page = render_html(outcome(champion, labels=(EVIL, "spam")))
    assert "<script" not in page
    assert "script" not in parse(page).tags
    assert "&lt;/script&gt; buy now" in page  # the surest mistake, shown as text
    summary = render_markdown(outcome(champion, labels=(EVIL, "spam")))
    assert "<script" not in summary


def test_the_page_is_self_contained_with_inline_charts() -> None:
    page = render_html(outcome(ChampionResult("none")))
    collected = parse(page)
    assert collected.urls == []  # no external stylesheet, script or image
    assert collected.tags.count("svg") == 3  # confusion matrix, reliability, ROC
    assert 'aria-label="confusion matrix"' in page and 'aria-label="reliability diagram"' in page
    assert "Slices by channel" in page and "Most confident mistakes" in page


def test_no_roc_chart_for_more_than_two_classes() -> None:
    y = [0, 1, 2]
    labels = ("a", "b", "c")
    scores = score_model(y, np.eye(3) * 0.8 + 0.2 / 3, labels)
    result = EvaluationOutcome(
        model_name="m",
        scores=scores,
        roc=None,
        slices=None,
        mistakes=(),
        behaviour=(),
        champion=ChampionResult("none"),
        decision=decide(SETTINGS, scores, ChampionResult("none")),
        settings=SETTINGS,
    )
    page = render_html(result)
    assert parse(page).tags.count("svg") == 2
    assert "Decision: Ships" in page
    assert "every test row was predicted right" in page


def test_a_scored_champion_gets_its_own_column() -> None:
    base = outcome(ChampionResult("none"))
    champion = ChampionResult("scored", 7, Path("/m/7"), ("ham", "spam"), base.scores)
    page = render_html(outcome(champion))
    assert "<th>production v7</th>" in page and "<th>difference</th>" in page
    summary = render_markdown(outcome(champion))
    assert "| metric | new model | production v7 |" in summary


def test_markdown_summary_has_the_decision_reasons_and_escaped_cells() -> None:
    summary = render_markdown(outcome(ChampionResult("none")))
    first = summary.splitlines()[0]
    assert first == "# spam-filter: does not ship"
    assert "- no model in production yet: compared to floors only" in summary
    assert "| accuracy |" in summary and "Worst slice by channel" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| names"))
    assert row.count("|") - row.count("\\|") == 6  # the cell's own text adds no column


@pytest.mark.parametrize("deploy", [True, False])
def test_summary_headline_follows_the_decision(deploy: bool) -> None:
    settings = GateSettings(
        min_accuracy=0.0,
        min_macro_f1=0.0 if deploy else 0.99,
        max_regression=0.01,
        enforce_production_labels=True,
    )
    result = outcome(ChampionResult("none"))
    result = EvaluationOutcome(
        **{
            **result.__dict__,
            "behaviour": (),
            "decision": decide(settings, result.scores, result.champion),
        }
    )
    assert render_markdown(result).startswith(
        f"# spam-filter: {'ships' if deploy else 'does not ship'}"
    )
    assert re.search(r"Decision: (Ships|Does not ship)", render_html(result))
