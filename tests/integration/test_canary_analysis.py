"""The deploy step's canary analysis, judged by a real Prometheus scraping real predictors.

Four predictors (`python -m textops.components.serve`) serve on loopback ports: the stable
model; a healthy canary (the same bundle); a failing canary, whose tokenizer knows a token its
model has no embedding for (a tokenizer extended without `resize_token_embeddings`), so that
ONNX Runtime fails on every text holding that token and the server answers 500; and a slow
canary, a model 8 times wider and 4 times as deep, served in fp32.

A Prometheus (Debian's `prometheus`; without it these tests fail, naming the package, rather
than skip) scrapes their /metrics every second, each target labelled as the PodMonitor of
manifests/observability labels a pod of a Knative revision: `namespace` and the revision label
its podTargetLabels bring. The deploy step (`deploy_bundle`) rolls a bundle out to an
InferenceService whose API is the fake of test_deploy_kserve, while traffic is driven to the
stable predictor and the canary; the analysis promotes the healthy canary and rolls back the
failing one, the slow one and one that gets no traffic.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import math
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from tests.unit.test_deploy_kserve import (
    NAMESPACE,
    FakeInferenceServices,
    kserve_client_over,
)
from textops.components.common.errors import DeployError
from textops.components.common.settings import DeploySettings
from textops.components.deploy.canary_metrics import REVISION_LABEL
from textops.components.deploy.deployment import deploy_bundle

if TYPE_CHECKING:
    from tests.integration.conftest import ServeProcess, StartServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POD_MONITOR = ROOT / "manifests" / "observability" / "predictor-podmonitor.yaml"
MODEL = "textops-classifier"
OLD = "s3://mlpipeline/v2/artifacts/textops-training/run-1/export-model/bundle"
NEW = "s3://mlpipeline/v2/artifacts/textops-training/run-2/export-model/bundle"
#: The token the failing canary's tokenizer has and its model lacks.
UNKNOWN_TOKEN = "<ticket>"
TEXTS = ("The food was great and the staff friendly.", "Terrible service, never again.")
#: Half of the texts make the failing canary fail; the others, and the stable model, never do.
MIXED = (f"Refund {UNKNOWN_TOKEN} 4411 please", "The food was great and the staff friendly.")
#: One InferenceService per case; each name gives revisions <name>-predictor-00001 (stable)
#: and -00002 (the canary), as the fake controller names them.
SERVICES = {
    "healthy": "healthy-canary",
    "failing": "failing-canary",
    "slow": "slow-canary",
    "idle": "idle-canary",
}
WINDOW_SECONDS = 5
MIN_REQUESTS = 40
# Above the default (1.5): the predictors share two cores with the test and Prometheus, and a
# stall of a few ms is noise here, not the canary's doing.
MAX_P99_RATIO = 3.0
#: Texts per request in the latency case: the slow canary takes some 50 ms a request, the
#: stable model under 5 ms.
BATCH = 16
#: Pause between one driver's requests: some 30 requests a second to each predictor.
PAUSE_SECONDS = 0.03
WAIT_SECONDS = 30.0


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(f"/usr/bin/{name}")
    if found is None:
        pytest.fail(
            f"{name} is not installed: install the Debian package `{package}` "
            f"(apt-get install {package}), as .ci/run does"
        )
    return found


def revision_label() -> str:
    """The label the PodMonitor's podTargetLabels give the series, as the Prometheus Operator
    names it: every character a label name cannot hold becomes `_`."""
    monitor = yaml.safe_load(POD_MONITOR.read_text())
    (label,) = monitor["spec"]["podTargetLabels"]
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def revision(service: str, number: int) -> str:
    return f"{service}-predictor-{number:05d}"


@dataclass
class Predictors:
    stable: ServeProcess
    healthy: ServeProcess
    failing: ServeProcess
    slow: ServeProcess


@pytest.fixture(scope="module")
def failing_bundle(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with one token added to its tokenizer and none to its model."""
    from tokenizers import Tokenizer

    bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path_factory.mktemp("failing") / "b"))
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    assert tokenizer.add_tokens([UNKNOWN_TOKEN]) == 1
    tokenizer.save(str(bundle / "tokenizer.json"))
    return bundle


@pytest.fixture(scope="module")
def slow_bundle(
    tiny_model_dir: Path,
    tiny_training_metadata: dict[str, Any],
    export_tiny: Callable[[Path, dict[str, Any], Path], Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A bundle of a larger model (hidden 256, 8 layers): same tokenizer and labels."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(tiny_model_dir)
    config.update(
        {"hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4}
        | {"intermediate_size": 1024, "initializer_range": 0.02}
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertForSequenceClassification(config).eval()
    directory = tmp_path_factory.mktemp("slow")
    model_dir = Path(shutil.copytree(tiny_model_dir, directory / "model"))
    model.save_pretrained(model_dir)
    export_tiny(model_dir, tiny_training_metadata, directory / "bundle")
    return directory / "bundle"


@pytest.fixture(scope="module")
def predictors(
    tiny_bundle_dir: Path,
    failing_bundle: Path,
    slow_bundle: Path,
    serve_process: StartServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Predictors]:
    logs = tmp_path_factory.mktemp("predictors")

    def start(bundle: Path, name: str, *flags: str, nice: bool = False) -> ServeProcess:
        command = [
            *(("nice", "-n", "19") if nice else ()),
            *(sys.executable, "-m", "textops.components.serve"),
            *("--bundle", str(bundle), "--model_name", MODEL, "--intra-op-threads", "1"),
            *flags,
        ]
        return serve_process(command, logs / f"{name}.log", model=MODEL)

    started = Predictors(
        start(tiny_bundle_dir, "stable"),
        start(tiny_bundle_dir, "healthy"),
        start(failing_bundle, "failing"),
        # Pods of two revisions have cores of their own; here they share two. At the lowest
        # CPU priority, the slow canary's work does not slow the stable model it is judged
        # against.
        start(slow_bundle, "slow", "--precision", "fp32", nice=True),
    )
    yield started
    for server in (started.stable, started.healthy, started.failing, started.slow):
        server.stop()


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def prometheus(
    predictors: Predictors,
    free_port: Callable[[], int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    """Prometheus scraping the predictors every second, each target labelled as the Prometheus
    Operator labels a pod of the PodMonitor: its namespace and its Knative revision."""
    label = revision_label()
    assert label == REVISION_LABEL  # the manifest and the analysis's queries agree
    targets = [(predictors.stable, revision(service, 1)) for service in SERVICES.values()] + [
        (predictors.healthy, revision(SERVICES["healthy"], 2)),
        (predictors.failing, revision(SERVICES["failing"], 2)),
        (predictors.slow, revision(SERVICES["slow"], 2)),
        # The idle case's canary: a predictor that serves nothing during that case.
        (predictors.healthy, revision(SERVICES["idle"], 2)),
    ]
    static_configs = [
        {
            "targets": [server.url.removeprefix("http://")],
            "labels": {"namespace": NAMESPACE, "pod": f"{name}-deployment-0", label: name},
        }
        for server, name in targets
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": f"podMonitor/{NAMESPACE}/{MODEL}/0",
                "metrics_path": "/metrics",
                "static_configs": static_configs,
            }
        ],
    }
    directory = tmp_path_factory.mktemp("prometheus")
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                _binary("prometheus", "prometheus"),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_until_every_target_is_up(server, len(targets))
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_every_target_is_up(prometheus: Prometheus, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if prometheus.process.poll() is not None:
            pytest.fail(f"prometheus exited:\n{prometheus.log.read_text()}")
        with contextlib.suppress(httpx.HTTPError, ValueError):  # not listening, or not ready
            active = httpx.get(f"{prometheus.url}/api/v1/targets", timeout=5).json()
            health = [t["health"] for t in active["data"]["activeTargets"]]
            if len(health) == count and set(health) == {"up"}:
                return
        time.sleep(0.2)
    pytest.fail(f"prometheus did not scrape every target in time:\n{prometheus.log.read_text()}")


@contextlib.contextmanager
def traffic(
    *targets: tuple[str, Sequence[str]], batch: int = 1
) -> Iterator[dict[str, collections.Counter[int]]]:
    """Requests of `batch` texts to each predictor from a thread of its own, V1 and V2 in
    turn, the texts in turn, until the block ends; yields the statuses each one answered."""
    stop = threading.Event()
    answered = {url: collections.Counter[int]() for url, _ in targets}

    def drive(url: str, texts: Sequence[str]) -> None:
        with httpx.Client(timeout=30) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                sent = [texts[(i // 2 + k) % len(texts)] for k in range(batch)]
                if i % 2:
                    answer = http.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": sent})
                else:
                    tensor = {"name": "text", "datatype": "BYTES", "shape": [batch], "data": sent}
                    answer = http.post(f"{url}/v2/models/{MODEL}/infer", json={"inputs": [tensor]})
                answered[url][answer.status_code] += 1
                stop.wait(PAUSE_SECONDS)

    threads = [threading.Thread(target=drive, args=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    try:
        yield answered
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


@pytest.fixture
def fake() -> FakeInferenceServices:
    """The InferenceService API, each case's service serving OLD (revision -00001)."""
    services = FakeInferenceServices()
    for service in SERVICES.values():
        services.put(service, OLD, version=1)
    return services


@pytest.fixture
def client(fake: FakeInferenceServices) -> Iterator[Any]:
    """A real KServeClient whose CustomObjectsApi is an autospec driven by `fake`."""
    with kserve_client_over(fake) as kserve:
        yield kserve


def deploy(service: str, client: Any, prometheus: Prometheus, bundle: Path) -> str:
    """The deploy step, kserve target, a 10% canary judged by `prometheus`."""
    return deploy_bundle(
        bundle_path=bundle,
        bundle_uri=NEW,
        model_repository=bundle.parent / "unused",
        model_name=service,
        deploy_target="kserve",
        settings=DeploySettings(
            canary_traffic_percent=10,
            rollout_timeout_seconds=60,
            prometheus_url=prometheus.url,
            canary_analysis_seconds=WINDOW_SECONDS,
            canary_min_requests=MIN_REQUESTS,
            canary_max_error_rate_increase=0.01,
            canary_max_p99_ratio=MAX_P99_RATIO,
        ),
        kserve_namespace=NAMESPACE,
        client=client,
    )


def logged_analysis(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    lines = [r.getMessage() for r in caplog.records]
    (line,) = [text for text in lines if text.startswith('{"event": "canary_analysis"')]
    report: dict[str, Any] = json.loads(line)
    return report


def test_a_healthy_canary_is_promoted(
    predictors: Predictors,
    prometheus: Prometheus,
    fake: FakeInferenceServices,
    client: Any,
    tiny_bundle_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="textops")
    service = SERVICES["healthy"]

    with traffic((predictors.stable.url, TEXTS), (predictors.healthy.url, TEXTS)) as answered:
        url = deploy(service, client, prometheus, tiny_bundle_dir)

    assert url == f"http://{service}.{NAMESPACE}.example.com"
    assert fake.serving(service) == {NEW: 100}
    report = logged_analysis(caplog)
    assert report["verdict"] == "promote" and report["reasons"] == []
    assert report["window_seconds"] == WINDOW_SECONDS
    canary, stable = report["canary"], report["stable"]
    assert (canary["revision"], stable["revision"]) == (revision(service, 2), revision(service, 1))
    for figures in (canary, stable):
        # About 30 requests a second for the window; every one answered 200.
        assert MIN_REQUESTS <= figures["requests"] <= 60 * WINDOW_SECONDS, report
        assert figures["errors"] == 0 and figures["error_rate"] == 0
        # A measured latency, not a placeholder: how fast this machine answers is no test's
        # business, so no upper bound.
        assert math.isfinite(figures["p99_seconds"]) and figures["p99_seconds"] > 0, report
    for statuses in answered.values():
        assert set(statuses) == {200}, answered


def test_a_failing_canary_is_rolled_back_with_the_figures(
    predictors: Predictors,
    prometheus: Prometheus,
    fake: FakeInferenceServices,
    client: Any,
    tiny_bundle_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="textops")
    service = SERVICES["failing"]

    failing = ((predictors.stable.url, MIXED), (predictors.failing.url, MIXED))
    with traffic(*failing) as answered, pytest.raises(DeployError) as raised:
        deploy(service, client, prometheus, tiny_bundle_dir)

    assert fake.serving(service) == {OLD: 100}  # the previous model serves again
    message = str(raised.value)
    assert "the canary did not pass its analysis: the canary's error rate" in message
    assert f"the previous model ({OLD}, version 1) is still serving" in message
    report = json.loads(message.split("Analysis: ", 1)[1].rsplit(". Rolled back", 1)[0])
    assert report == logged_analysis(caplog)
    assert report["verdict"] == "roll back"
    canary, stable = report["canary"], report["stable"]
    assert canary["revision"] == revision(service, 2)
    assert stable["errors"] == 0 and stable["requests"] >= MIN_REQUESTS
    # Half the texts fail on the canary, as its clients saw.
    seen = answered[predictors.failing.url]
    assert set(seen) == {200, 500} and set(answered[predictors.stable.url]) == {200}
    assert canary["error_rate"] == pytest.approx(seen[500] / seen.total(), abs=0.1), report
    assert canary["errors"] >= MIN_REQUESTS / 4, report


def test_a_slower_canary_is_rolled_back(
    predictors: Predictors,
    prometheus: Prometheus,
    fake: FakeInferenceServices,
    client: Any,
    tiny_bundle_dir: Path,
) -> None:
    service = SERVICES["slow"]
    slow = ((predictors.stable.url, TEXTS), (predictors.slow.url, TEXTS))

    with traffic(*slow, batch=BATCH) as answered, pytest.raises(DeployError) as raised:
        deploy(service, client, prometheus, tiny_bundle_dir)

    assert fake.serving(service) == {OLD: 100}
    message = str(raised.value)
    report = json.loads(message.split("Analysis: ", 1)[1].rsplit(". Rolled back", 1)[0])
    canary, stable = report["canary"], report["stable"]
    (reason,) = report["reasons"]
    assert re.fullmatch(
        r"the canary's p99 latency [0-9.]+ ms is more than canary_max_p99_ratio \(3\) times "
        r"the stable model's [0-9.]+ ms",
        reason,
    )
    assert canary["p99_seconds"] > 3 * stable["p99_seconds"], report
    assert canary["errors"] == stable["errors"] == 0
    assert all(set(statuses) == {200} for statuses in answered.values()), answered


def test_a_canary_without_traffic_is_not_promoted(
    predictors: Predictors,
    prometheus: Prometheus,
    fake: FakeInferenceServices,
    client: Any,
    tiny_bundle_dir: Path,
) -> None:
    service = SERVICES["idle"]

    with traffic((predictors.stable.url, TEXTS)), pytest.raises(DeployError) as raised:
        deploy(service, client, prometheus, tiny_bundle_dir)

    assert fake.serving(service) == {OLD: 100}
    message = str(raised.value)
    assert (
        f"the canary ({revision(service, 2)}) answered 0 requests, fewer than "
        f"canary_min_requests ({MIN_REQUESTS})"
    ) in message
    assert "stable model (" not in message.split("Analysis: ")[0]  # the stable had its share
