"""Canary analysis: before a canary takes all traffic, compare it with the model it replaces.

While KServe splits the traffic (Knative mode), each revision's pods carry the label
`serving.knative.dev/revision`, which reaches Prometheus with the model server's own metrics,
so the canary's requests are told from the stable model's. Once the canary is Ready,
`CanaryAnalysis.observe` waits one observation window, reads each revision's requests, 5xx
answers and p99 predict latency from Prometheus (`canary_metrics`), and `judge` decides:
promote, or roll back. Every rule is a setting of `DeploySettings` (common/settings.py), which
the analysis takes as it is; an analysis that cannot
be made (no Prometheus, no revisions to tell apart) is never a pass.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from textops.components.common.errors import ConfigError, TextopsError
from textops.components.common.settings import DeploySettings
from textops.components.deploy.canary_metrics import (
    InstantQuery,
    PrometheusApi,
    PrometheusQueryError,
    revision_queries,
)

logger = logging.getLogger(__name__)


class CanaryAnalysisError(TextopsError):
    """The canary could not be judged: Prometheus did not answer, or the revisions are unknown."""


@dataclass(frozen=True)
class RevisionFigures:
    """What one revision did during the window."""

    revision: str
    #: Predict calls (a 5xx answered before predict is counted by `answered` instead).
    requests: float
    #: 5xx answers.
    errors: float
    #: p99 predict latency; None when it served nothing.
    p99_seconds: float | None

    @property
    def answered(self) -> float:
        """Requests judged: predict calls, or the 5xx answers when there are more of those
        (a pod answering 503 before its model is loaded never reaches predict)."""
        return max(self.requests, self.errors)

    @property
    def error_rate(self) -> float | None:
        """Share of requests answered with a 5xx; None when there were none at all."""
        return self.errors / self.answered if self.answered > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """The figures, rounded for a log line."""
        rate, p99 = self.error_rate, self.p99_seconds
        return {
            "revision": self.revision,
            "requests": round(self.answered, 1),
            "errors": round(self.errors, 1),
            "error_rate": None if rate is None else round(rate, 5),
            "p99_seconds": None if p99 is None else round(p99, 5),
        }


@dataclass(frozen=True)
class CanaryVerdict:
    """Promote, or roll back for the reasons given."""

    reasons: tuple[str, ...]

    @property
    def promote(self) -> bool:
        """Whether every rule passed."""
        return not self.reasons


def judge(
    canary: RevisionFigures, stable: RevisionFigures, settings: DeploySettings
) -> CanaryVerdict:
    """Compare the canary with the stable model; every broken rule is a reason to roll back.

    1. Traffic: each revision answered at least `canary_min_requests` requests. A canary that
       saw too little traffic is not known to be healthy, so it is not promoted; and without as
       much of the stable model's traffic there is nothing to compare it with.
    2. Errors: the canary's 5xx rate is at most the stable model's plus
       `canary_max_error_rate_increase` (errors both share, such as a failing dependency, are
       not the canary's fault).
    3. Latency: the canary's p99 predict time is at most `canary_max_p99_ratio` times the
       stable model's (compared only with enough traffic on both sides: rule 1).
    """
    reasons: list[str] = []
    for role, figures in (("canary", canary), ("stable model", stable)):
        if figures.answered < settings.canary_min_requests:
            reasons.append(
                f"the {role} ({figures.revision}) answered {figures.answered:g} requests, fewer "
                f"than canary_min_requests ({settings.canary_min_requests})"
            )
    canary_rate, stable_rate = canary.error_rate, stable.error_rate or 0.0
    allowed_increase = settings.canary_max_error_rate_increase
    if canary_rate is not None and canary_rate > stable_rate + allowed_increase:
        reasons.append(
            f"the canary's error rate {canary_rate:.2%} exceeds the stable model's "
            f"{stable_rate:.2%} by more than canary_max_error_rate_increase "
            f"({allowed_increase:.2%})"
        )
    if min(canary.answered, stable.answered) >= settings.canary_min_requests:
        reasons.extend(
            _latency_reasons(canary.p99_seconds, stable.p99_seconds, settings.canary_max_p99_ratio)
        )
    return CanaryVerdict(tuple(reasons))


def _latency_reasons(
    canary_p99: float | None, stable_p99: float | None, max_p99_ratio: float
) -> list[str]:
    if canary_p99 is None or stable_p99 is None:
        return []
    if canary_p99 <= stable_p99 * max_p99_ratio:
        return []
    return [
        f"the canary's p99 latency {canary_p99 * 1000:.1f} ms is more than "
        f"canary_max_p99_ratio ({max_p99_ratio:g}) times the stable model's "
        f"{stable_p99 * 1000:.1f} ms"
    ]


@dataclass(frozen=True)
class CanaryReport:
    """One analysis: the window, both revisions' figures, the settings and the verdict."""

    inference_service: str
    window_seconds: float
    start: float
    end: float
    canary: RevisionFigures
    stable: RevisionFigures
    settings: DeploySettings
    verdict: CanaryVerdict

    def as_json(self) -> str:
        """The report as one JSON line (the step's log and its DeployError carry it)."""
        return json.dumps(
            {
                "event": "canary_analysis",
                "inference_service": self.inference_service,
                "verdict": "promote" if self.verdict.promote else "roll back",
                "reasons": list(self.verdict.reasons),
                "window_seconds": self.window_seconds,
                "start": _iso(self.start),
                "end": _iso(self.end),
                "canary": self.canary.as_dict(),
                "stable": self.stable.as_dict(),
                "limits": {
                    "min_requests": self.settings.canary_min_requests,
                    "max_error_rate_increase": self.settings.canary_max_error_rate_increase,
                    "max_p99_ratio": self.settings.canary_max_p99_ratio,
                },
            },
            sort_keys=False,
        )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


# --- the analysis ---------------------------------------------------------------------------


def canary_analysis_for(settings: DeploySettings, namespace: str) -> CanaryAnalysis | None:
    """The analysis `settings` ask for, of an InferenceService in `namespace`; None for a
    window (canary_analysis_seconds) of 0, which promotes a Ready canary without one.

    Raises:
        ConfigError: prometheus_url is not an http(s) URL (an empty one included).
    """
    if settings.canary_analysis_seconds == 0:
        return None
    return CanaryAnalysis(PrometheusApi(settings.prometheus_url), namespace, settings)


def canary_revisions(isvc: Mapping[str, Any]) -> tuple[str, str]:
    """(canary, stable): the revision created last, and the one rolled out before it.

    Raises:
        CanaryAnalysisError: The status names no such pair (RawDeployment mode has no
            revisions, and no canary either).
    """
    predictor = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    canary = predictor.get("latestCreatedRevision")
    stable = predictor.get("latestRolledoutRevision")
    if not canary or not stable or canary == stable:
        raise CanaryAnalysisError(
            "the InferenceService's status does not name a canary revision and a stable one "
            f"(latestCreatedRevision {canary!r}, latestRolledoutRevision {stable!r}): a canary "
            "needs KServe's Serverless (Knative) mode; in RawDeployment mode set "
            "canary_traffic_percent to 0"
        )
    return str(canary), str(stable)


class CanaryAnalysis:
    """Watches a canary for one window and judges it against the stable model."""

    def __init__(
        self,
        query: InstantQuery,
        namespace: str,
        settings: DeploySettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Bind the analysis to Prometheus (`query`) and the InferenceService's namespace;
        `settings` give the window (canary_analysis_seconds) and the limits.

        Raises:
            ConfigError: The window is 0, which asks for no analysis.
        """
        if settings.canary_analysis_seconds < 1:
            raise ConfigError(
                "canary_analysis_seconds must be at least 1 to analyse, got "
                f"{settings.canary_analysis_seconds}"
            )
        self.query = query
        self.namespace = namespace
        self.settings = settings
        self.window_seconds = settings.canary_analysis_seconds
        self._sleep = sleep
        self._wall_clock = wall_clock

    def observe(self, isvc: Mapping[str, Any]) -> CanaryReport:
        """Wait one window from now, then judge the canary of `isvc` (its status just Ready).

        The report is logged as one JSON line.

        Raises:
            CanaryAnalysisError: The revisions are unknown or Prometheus failed.
        """
        canary, stable = canary_revisions(isvc)
        name = (isvc.get("metadata") or {}).get("name")
        where = f"{self.namespace}/{name}"
        logger.info(
            "canary analysis %s: watching canary=%s stable=%s for %d s",
            where,
            canary,
            stable,
            self.window_seconds,
        )
        start = self._wall_clock()
        self._sleep(self.window_seconds)
        end = start + self.window_seconds
        canary_figures = self._figures(canary, end)
        stable_figures = self._figures(stable, end)
        report = CanaryReport(
            where,
            self.window_seconds,
            start,
            end,
            canary_figures,
            stable_figures,
            self.settings,
            judge(canary_figures, stable_figures, self.settings),
        )
        log = logger.info if report.verdict.promote else logger.warning
        log("%s", report.as_json())
        return report

    def _figures(self, revision: str, at: float) -> RevisionFigures:
        queries = revision_queries(self.namespace, revision, self.window_seconds)
        try:
            values = {name: self.query(promql, at) for name, promql in queries.items()}
        except PrometheusQueryError as e:
            raise CanaryAnalysisError(str(e)) from e
        return RevisionFigures(
            revision,
            requests=values["requests"] or 0.0,
            errors=values["errors"] or 0.0,
            p99_seconds=values["p99_seconds"],
        )
