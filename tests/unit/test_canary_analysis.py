"""The canary analysis: its verdict rules, its PromQL, and the rollout that acts on it.

The verdict is tested on figures alone; the queries are evaluated by Prometheus's own engine
(`promtool test rules`, Debian's `prometheus`: without it these tests fail, naming the package)
on series that start, reset and stay still during the window; the rollout runs against the
fake InferenceService API of test_deploy_kserve with the figures Prometheus would give.
tests/integration/test_canary_analysis.py runs it all against a real Prometheus and real
predictors.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy_kserve import (
    NAME,
    NAMESPACE,
    NEW,
    OLD,
    FakeClock,
    FakeInferenceServices,
    kserve_client_over,
)
from textops.components.common.config import TrainingConfig, load_config
from textops.components.common.errors import ConfigError, DeployError
from textops.components.common.settings import DeploySettings, section_from
from textops.components.deploy.canary_analysis import (
    CanaryAnalysis,
    CanaryAnalysisError,
    RevisionFigures,
    canary_revisions,
    judge,
)
from textops.components.deploy.canary_metrics import (
    REVISION_LABEL,
    PrometheusApi,
    PrometheusQueryError,
    revision_queries,
)
from textops.components.deploy.deployment import deploy_bundle
from textops.components.deploy.kserve_rollout import InferenceServiceRollout

STABLE = f"{NAME}-predictor-00001"
CANARY = f"{NAME}-predictor-00002"
WINDOW = 300
LIMITS = DeploySettings(
    prometheus_url="http://127.0.0.1:9",
    canary_analysis_seconds=WINDOW,
    canary_min_requests=100,
    canary_max_error_rate_increase=0.01,
    canary_max_p99_ratio=1.5,
)


def figures(
    requests: float, errors: float = 0, p99: float | None = 0.02, revision: str = CANARY
) -> RevisionFigures:
    return RevisionFigures(revision, requests, errors, p99)


# --- the verdict ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "stable", "reasons"),
    [
        (figures(500), figures(5000), []),
        # 1% more errors than the stable model is allowed; a little more is not.
        (figures(500, errors=5), figures(5000), []),
        (figures(500, errors=6), figures(5000), ["error rate 1.20% exceeds the stable"]),
        # Errors the stable model has too (a failing dependency) are not the canary's doing.
        (figures(500, errors=40), figures(5000, errors=350), []),
        (figures(500, p99=0.03), figures(5000, p99=0.02), []),
        (figures(500, p99=0.031), figures(5000, p99=0.02), ["p99 latency 31.0 ms is more"]),
        # Too little traffic on either side: nothing is known, nothing is promoted.
        (figures(99), figures(5000), ["the canary (", "answered 99 requests, fewer than"]),
        (figures(0, p99=None), figures(5000), ["answered 0 requests"]),
        (figures(500), figures(50), ["the stable model (", "answered 50 requests"]),
        # Latency is only compared with enough traffic on both sides.
        (figures(99, p99=9.0), figures(5000), ["answered 99 requests"]),
    ],
    ids=[
        "healthy",
        "errors-within-allowance",
        "errors-over-allowance",
        "errors-both-share",
        "latency-within-ratio",
        "latency-over-ratio",
        "canary-too-little-traffic",
        "canary-idle",
        "stable-too-little-traffic",
        "latency-not-judged-on-too-little-traffic",
    ],
)
def test_the_verdict_applies_each_rule(
    canary: RevisionFigures, stable: RevisionFigures, reasons: list[str]
) -> None:
    verdict = judge(canary, stable, LIMITS)

    assert verdict.promote is (not reasons)
    text = "; ".join(verdict.reasons)
    for fragment in reasons:
        assert fragment in text
    if reasons:
        assert len(verdict.reasons) == 1, verdict.reasons


def test_every_broken_rule_is_a_reason() -> None:
    verdict = judge(figures(50, errors=25, p99=1.0), figures(60, p99=0.01), LIMITS)

    assert [reason.split(" ")[1] for reason in verdict.reasons] == ["canary", "stable", "canary's"]
    assert "error rate 50.00%" in verdict.reasons[2]


def test_server_errors_before_predict_count_as_requests() -> None:
    """A pod answering 503 before its model loads never reaches predict, whose histogram
    counts the requests: its 5xx answers are requests too, all of them failed."""
    loading = figures(0, errors=150, p99=None)

    assert loading.answered == 150 and loading.error_rate == 1.0
    verdict = judge(loading, figures(5000), LIMITS)
    assert not verdict.promote
    assert "error rate 100.00%" in "; ".join(verdict.reasons)
    assert figures(0, p99=None).error_rate is None


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (dict(canary_min_requests=0), "canary_min_requests: Input should be greater than or"),
        (dict(canary_max_error_rate_increase=1.5), "canary_max_error_rate_increase: Input should"),
        (dict(canary_max_p99_ratio=0.9), "canary_max_p99_ratio: Input should be greater than or"),
    ],
)
def test_limits_out_of_range_are_config_errors(limits: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        section_from(DeploySettings, limits)


def test_an_analysis_needs_a_window() -> None:
    with pytest.raises(ConfigError, match="canary_analysis_seconds must be at least 1"):
        CanaryAnalysis(FailingQueries(), NAMESPACE, DeploySettings(canary_analysis_seconds=0))


# --- the queries, evaluated by Prometheus's engine ------------------------------------------


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which("/usr/bin/promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: install the Debian package `prometheus` "
            "(apt-get install prometheus), as .ci/run does"
        )
    return found


def series(metric: str, revision: str, values: str, **labels: str) -> dict[str, str]:
    matchers = {"namespace": NAMESPACE, REVISION_LABEL: revision, "pod": f"{revision}-0"}
    matchers |= labels
    inner = ",".join(f'{key}="{value}"' for key, value in matchers.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def test_the_queries_count_what_each_revision_did_in_the_window(tmp_path: Path) -> None:
    """Minute samples from 0m to 10m, judged at 10m over a 5-minute window (5m..10m)."""
    count, bucket = "request_predict_seconds_count", "request_predict_seconds_bucket"
    errors = "textops_request_errors_total"
    inputs = [
        # The stable model, serving throughout: 10 requests a minute, a restart at 8m.
        series(count, STABLE, "0+10x7 5 15 25"),
        series(errors, STABLE, "3+0x10", status="503"),  # none during the window
        series(errors, STABLE, "0+1x10", status="400"),  # client errors are not counted
        # The canary's first requests come at 7m: 4, then 4 a minute; a lone 500 at 9m,
        # which `increase()` alone, with a single sample, would miss.
        series(count, CANARY, "_x6 4+4x3"),
        series(errors, CANARY, "_x8 1 1", status="500"),
        series(bucket, CANARY, "_x6 0+0x3", le="0.005"),
        series(bucket, CANARY, "_x6 4+4x3", le="0.01"),
        series(bucket, CANARY, "_x6 4+4x3", le="+Inf"),
        # The same revision name in another namespace is another service's.
        series(count, CANARY, "0+100x10", namespace="elsewhere"),
    ]
    expected = {
        # 50 to 70 from 5m to 7m, then 5, 15, 25 after the restart: 20 + 5 + 10 + 10.
        (STABLE, "requests"): 45,
        (STABLE, "errors"): 0,
        (CANARY, "requests"): 16,
        (CANARY, "errors"): 1,
        # Every canary request took 5 to 10 ms: the 99th is interpolated near 10 ms.
        (CANARY, "p99_seconds"): 0.005 + 0.005 * 0.99,
    }
    tests = []
    for (revision, figure), value in expected.items():
        query = revision_queries(NAMESPACE, revision, WINDOW)[figure]
        samples = [] if value is None else [{"labels": "{}", "value": value}]
        tests.append({"expr": query, "eval_time": "10m", "exp_samples": samples})
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": tests}],
            },
            sort_keys=False,
        )
    )

    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


# --- reading the InferenceService and Prometheus ---------------------------------------------


def test_the_revisions_come_from_the_predictors_status() -> None:
    isvc = {
        "status": {
            "components": {
                "predictor": {
                    "latestCreatedRevision": CANARY,
                    "latestReadyRevision": CANARY,
                    "latestRolledoutRevision": STABLE,
                    "previousRolledoutRevision": None,
                }
            }
        }
    }
    assert canary_revisions(isvc) == (CANARY, STABLE)
    with pytest.raises(CanaryAnalysisError, match="RawDeployment mode set canary_traffic_pe"):
        canary_revisions({"status": {"components": {"predictor": {}}}})


def test_prometheus_that_does_not_answer_is_an_analysis_error(free_port: int) -> None:
    api = PrometheusApi(f"http://127.0.0.1:{free_port}/")

    with pytest.raises(
        PrometheusQueryError, match=r"no answer from Prometheus at .*\(prometheus_url\)"
    ):
        api("up", 0.0)
    with pytest.raises(ConfigError, match="prometheus_url must be an http"):
        PrometheusApi("prometheus.monitoring:9090")


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the rollout ----------------------------------------------------------------------------


class FigureQueries:
    """What Prometheus answers for each revision: the figures given, by the query's kind."""

    def __init__(self, by_revision: dict[str, RevisionFigures]) -> None:
        self.by_revision = by_revision
        self.times: list[float] = []

    def __call__(self, promql: str, at: float) -> float | None:
        self.times.append(at)
        found = re.search(rf'{REVISION_LABEL}="([^"]+)"', promql)
        assert found and f'namespace="{NAMESPACE}"' in promql, promql
        revision = self.by_revision[found[1]]
        if promql.startswith("histogram_quantile"):
            return revision.p99_seconds
        if "textops_request_errors_total" in promql:
            return revision.errors
        return revision.requests


class FailingQueries:
    def __call__(self, promql: str, at: float) -> float | None:
        raise PrometheusQueryError("no answer from Prometheus at http://p:9090 (prometheus_url)")


@pytest.fixture
def fake() -> FakeInferenceServices:
    return FakeInferenceServices()


@pytest.fixture
def client(fake: FakeInferenceServices) -> Iterator[Any]:
    """A real KServeClient whose CustomObjectsApi is an autospec driven by `fake`."""
    with kserve_client_over(fake) as kserve:
        yield kserve


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def rollout_judged_by(
    client: Any, clock: FakeClock, query: Any
) -> tuple[InferenceServiceRollout, CanaryAnalysis]:
    analysis = CanaryAnalysis(
        query,
        NAMESPACE,
        LIMITS,
        sleep=clock.sleep,
        wall_clock=lambda: 1_800_000_000.0 + clock.now,
    )
    rollout = InferenceServiceRollout(
        client,
        NAME,
        NAMESPACE,
        timeout_seconds=60,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        canary_analysis=analysis,
    )
    return rollout, analysis


def test_a_canary_that_passes_is_promoted_after_the_window(
    client: Any, fake: FakeInferenceServices, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="textops")
    fake.put(NAME, OLD, version=3)
    query = FigureQueries(
        {CANARY: figures(400, errors=1), STABLE: figures(3600, errors=9, revision=STABLE)}
    )
    rollout, _ = rollout_judged_by(client, clock, query)
    started = clock.now

    result = rollout.roll_out(NEW, canary_traffic_percent=10)

    assert result.version == 4 and fake.serving() == {NEW: 100}
    assert {OLD: 90, NEW: 10} in fake.traffic_history  # judged while the canary ran
    assert clock.now - started >= WINDOW
    # Every figure read at the end of the window.
    assert len(query.times) == 6 and len(set(query.times)) == 1
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("{")]
    report = json.loads(line)
    assert report["verdict"] == "promote" and report["window_seconds"] == WINDOW
    assert report["canary"] == {
        "revision": CANARY,
        "requests": 400,
        "errors": 1,
        "error_rate": 0.0025,
        "p99_seconds": 0.02,
    }
    assert report["stable"]["revision"] == STABLE and report["stable"]["error_rate"] == 0.0025
    assert report["limits"] == {
        "min_requests": 100,
        "max_error_rate_increase": 0.01,
        "max_p99_ratio": 1.5,
    }


def test_a_canary_that_fails_is_rolled_back_with_the_figures(
    client: Any, fake: FakeInferenceServices, clock: FakeClock
) -> None:
    fake.put(NAME, OLD, version=3)
    query = FigureQueries(
        {CANARY: figures(400, p99=0.09), STABLE: figures(3600, p99=0.03, revision=STABLE)}
    )
    rollout, _ = rollout_judged_by(client, clock, query)

    with pytest.raises(DeployError) as raised:
        rollout.roll_out(NEW, canary_traffic_percent=10)

    message = str(raised.value)
    assert "the canary did not pass its analysis: the canary's p99 latency 90.0 ms" in message
    assert f"the previous model ({OLD}, version 3) is still serving" in message
    report = json.loads(message.split("Analysis: ", 1)[1].rsplit(". Rolled back", 1)[0])
    assert report["verdict"] == "roll back"
    assert (report["canary"]["p99_seconds"], report["stable"]["p99_seconds"]) == (0.09, 0.03)
    assert fake.serving() == {OLD: 100}
    assert all(split.get(NEW, 0) < 100 for split in fake.traffic_history)


def test_a_failed_canary_gets_no_more_traffic_while_the_previous_model_restarts(
    client: Any, fake: FakeInferenceServices, clock: FakeClock
) -> None:
    # Putting the previous storageUri back starts a new revision of it, which takes a pod
    # start to be Ready; meanwhile Knative sends the share of `latestRevision` to the latest
    # Ready revision: the canary that just failed.
    fake.put(NAME, OLD, version=3)
    fake.behaviour[OLD] = "slow"
    query = FigureQueries(
        {CANARY: figures(400, errors=200), STABLE: figures(3600, revision=STABLE)}
    )
    rollout, _ = rollout_judged_by(client, clock, query)

    with pytest.raises(DeployError, match="is still serving"):
        rollout.roll_out(NEW, canary_traffic_percent=10)

    assert fake.serving() == {OLD: 100}
    assert max(split.get(NEW, 0) for split in fake.traffic_history) == 10
    restores = [w for w in fake.writes if w[0] == "patch"][1:]
    # The previous model first comes back held at canaryTrafficPercent 0, then takes it all.
    assert [w[1]["spec"]["predictor"]["canaryTrafficPercent"] for w in restores] == [0, 100]


def test_a_canary_that_cannot_be_judged_is_rolled_back(
    client: Any, fake: FakeInferenceServices, clock: FakeClock
) -> None:
    fake.put(NAME, OLD)
    rollout, _ = rollout_judged_by(client, clock, FailingQueries())

    with pytest.raises(DeployError) as raised:
        rollout.roll_out(NEW, canary_traffic_percent=10)

    assert "the canary analysis could not be made: no answer from Prometheus" in str(raised.value)
    assert "Rolled back" in str(raised.value)
    assert fake.serving() == {OLD: 100}


def test_an_interrupted_canary_is_judged_before_the_next_run_promotes_it(
    client: Any, fake: FakeInferenceServices, clock: FakeClock
) -> None:
    fake.put(NAME, OLD)
    fake.spec()["metadata"]["generation"] += 1  # the step was killed after its canary patch
    predictor = fake.spec()["spec"]["predictor"]
    predictor.update(canaryTrafficPercent=10, model={**predictor["model"], "storageUri": NEW})
    fake.spec()["metadata"]["annotations"].update(
        {"textops.dev/model-version": "2", "textops.dev/previous-storage-uri": OLD}
    )
    query = FigureQueries({CANARY: figures(10), STABLE: figures(3600, revision=STABLE)})
    rollout, _ = rollout_judged_by(client, clock, query)

    with pytest.raises(DeployError, match="answered 10 requests, fewer than"):
        rollout.roll_out(NEW, canary_traffic_percent=10)

    assert query.times  # the resumed canary was judged, not promoted for being Ready
    assert fake.serving() == {OLD: 100}


def test_without_an_analysis_a_ready_canary_is_promoted_with_a_warning(
    client: Any, fake: FakeInferenceServices, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake.put(NAME, OLD)
    rollout = InferenceServiceRollout(
        client, NAME, NAMESPACE, timeout_seconds=60, sleep=clock.sleep, monotonic=clock.monotonic
    )

    rollout.roll_out(NEW, canary_traffic_percent=10)

    assert fake.serving() == {NEW: 100}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"canary ready InferenceService {NAMESPACE}/{NAME}: promoting it without analysis" in (
        warnings
    )


# --- the settings -----------------------------------------------------------------------------


def deploy(client: Any, bundle: Path, tmp_path: Path, **changes: Any) -> str:
    return deploy_bundle(
        bundle_path=bundle,
        bundle_uri=NEW,
        model_repository=tmp_path / "models",
        model_name=NAME,
        deploy_target="kserve",
        settings=DeploySettings.model_validate(
            {
                **LIMITS.model_dump(),
                "canary_traffic_percent": 10,
                "rollout_timeout_seconds": 60,
                **changes,
            }
        ),
        kserve_namespace=NAMESPACE,
        client=client,
    )


def test_the_deploy_step_refuses_a_canary_without_prometheus_before_any_write(
    client: Any, fake: FakeInferenceServices, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    fake.put(NAME, OLD)

    with pytest.raises(ConfigError, match="prometheus_url must be an http:// or https:// URL"):
        deploy(client, tiny_bundle_dir, tmp_path, prometheus_url="")

    assert fake.writes == []


def test_a_window_of_0_promotes_without_analysis_and_says_so(
    client: Any,
    fake: FakeInferenceServices,
    tiny_bundle_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.put(NAME, OLD)

    deploy(client, tiny_bundle_dir, tmp_path, prometheus_url="", canary_analysis_seconds=0)

    assert fake.serving() == {NEW: 100}
    assert any("promoting it without analysis" in r.getMessage() for r in caplog.records)


def test_the_config_refuses_a_kserve_canary_without_prometheus(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("deploy_target: kserve\nprometheus_url: ''\n")

    with pytest.raises(ConfigError, match="prometheus_url is empty") as raised:
        load_config(config)
    assert "canary_traffic_percent is 10" in str(raised.value)

    # Explicitly no analysis, no canary, or the local target: nothing to judge by Prometheus.
    for override in ({"canary_analysis_seconds": 0}, {"canary_traffic_percent": 0}):
        assert load_config(config, override).prometheus_url == ""
    assert TrainingConfig(prometheus_url="").deploy_target == "local"
    with pytest.raises(ConfigError, match="prometheus_url"):
        load_config(None, {"prometheus_url": "prometheus:9090"})
