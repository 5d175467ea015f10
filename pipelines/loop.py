"""`textops loop`: the whole loop on one machine, as `make run` shows it to a new user.

1. The training pipeline runs through kfp.local and publishes a bundle.
2. The payload collector starts on a loopback port, with a SQLite store.
3. The KServe predictor starts on the model repository, its payload logger pointed at the
   collector (the CloudEvents KServe's agent sends in a cluster).
4. Traffic is replayed through the predictor's V1 route: first texts like the training data,
   then tweets, another domain. Their true labels are posted to the collector afterwards, as
   delayed ground truth arrives in production, except for a held-out part of the tweets
   (`loop_comparison.HELD_OUT_SHARE`), whose labels are kept back to judge the models by.
5. The drift job compares each window with the bundle's reference sample: the first should
   pass, the second is flagged, and the flag starts a retraining run on the loop's payload
   store: its collect_feedback step turns the labelled tweets into a feedback snapshot, which
   validate merges into the base data. Its deploy step hot-loads the new version into the
   running predictor.
6. It prints where every report is and how each version scores on the held-out tweets and on
   the original test split, and stops the processes it started.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.common.config import TrainingConfig
from textops.components.common.errors import TextopsError
from textops.pipelines.loop_comparison import (
    Comparison,
    accuracy_lines,
    compare_versions,
    withhold_labels,
)

if TYPE_CHECKING:
    import pandas as pd

    from textops.components.monitor.drift_job import DriftJobResult
    from textops.pipelines.local import LocalRunResult
    from textops.pipelines.retraining import RetrainingOutcome

logger = logging.getLogger(__name__)

#: Texts per request of the replay: small batches, as interactive clients send them.
REQUEST_BATCH = 8
#: Seconds a started service gets to answer its readiness route.
READY_TIMEOUT_S = 120.0
#: The Evidently workspace beside the drift runs' folders: `evidently ui` shows their history.
WORKSPACE_DIR = "workspace"


class LoopError(TextopsError):
    """A service of the loop did not start, or the loop's traffic did not reach the store."""


@dataclass(frozen=True)
class Phase:
    """One replay and the drift check after it."""

    name: str
    traffic: pd.DataFrame  # columns text, label
    drift: DriftJobResult | None = None


@dataclass(frozen=True)
class LoopResult:
    """What the loop did, for the summary it prints."""

    training: LocalRunResult
    phases: list[Phase]
    retraining: RetrainingOutcome | None
    served_version_after: str
    store_url: str
    workspace: Path
    comparison: Comparison


def free_port() -> int:
    """A TCP port that is free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def service(name: str, command: list[str], ready_url: str, log: Path) -> Iterator[str]:
    """Run `command` until the block ends; yield once `ready_url` answers 200.

    Raises:
        LoopError: The process exited, or was not ready within `READY_TIMEOUT_S`.
    """
    import httpx

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise LoopError(f"the {name} exited with status {process.returncode}; see {log}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LoopError(f"the {name} was not ready in {READY_TIMEOUT_S:g} s; see {log}")
            time.sleep(0.2)
        logger.info("started service=%s pid=%d log=%s", name, process.pid, log)
        yield ready_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        logger.info("stopped service=%s", name)


def in_distribution_traffic(config: TrainingConfig, bundle_dir: Path, rows: int) -> pd.DataFrame:
    """Rows of the training data that are not in the bundle's reference sample."""
    import pandas as pd

    from textops.components.common.bundle import ModelBundle
    from textops.components.common.dataio import read_table

    frame = read_table(config.data, config.data_format)
    frame = frame.rename(columns={config.text_column: "text", config.label_column: "label"})
    reference = pd.read_parquet(ModelBundle.open(bundle_dir).reference_path, columns=["text"])
    frame = frame[~frame["text"].isin(set(reference["text"]))].dropna(subset=["text"])
    if len(frame) < rows:
        raise LoopError(f"only {len(frame)} rows of {config.data} are outside the reference")
    frame = frame.sample(n=rows, random_state=config.seed)
    return frame[["text", "label"]].astype(str).reset_index(drop=True)


def shifted_traffic(labels: list[str], rows: int, seed: int) -> pd.DataFrame:
    """Tweets, another domain than reviews; labelled where the model knows the label."""
    from textops.components.monitor.shifted_traffic import load_tweets

    tweets = load_tweets(rows, seed=seed)
    tweets.loc[~tweets["label"].isin(labels), "label"] = ""
    return tweets[["text", "label"]]


def replay(server: str, model_name: str, traffic: pd.DataFrame, prefix: str) -> list[str]:
    """Send the texts through the predictor's V1 route; return the request ids used.

    Each request's X-Request-Id becomes its CloudEvents' Ce-Id, which the labels refer to.
    """
    import httpx

    ids = []
    url = f"{server}/v1/models/{model_name}:predict"
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(traffic), REQUEST_BATCH):
            request_id = f"{prefix}-{start // REQUEST_BATCH:05d}"
            texts = traffic["text"].iloc[start : start + REQUEST_BATCH].tolist()
            answer = client.post(
                url, json={"instances": texts}, headers={"X-Request-Id": request_id}
            )
            if answer.status_code != 200:
                raise LoopError(f"the predictor answered {answer.status_code}: {answer.text}")
            ids.append(request_id)
    return ids


def wait_until_stored(store_url: str, model_name: str, ids: list[str], rows: int) -> None:
    """Wait until the store holds every replayed text with its prediction.

    Raises:
        LoopError: The payload logger's events did not all arrive within a minute.
    """
    from textops.components.monitor.store import open_store

    wanted = set(ids)
    deadline = time.monotonic() + 60
    while True:
        with open_store(store_url) as store:
            window = store.fetch_window(model_name=model_name, last=rows)
        answered = window[window["event_id"].isin(wanted) & window["prediction"].notna()]
        if len(answered) >= rows:
            return
        if time.monotonic() > deadline:
            raise LoopError(
                f"{len(answered)} of {rows} replayed texts reached the payload store in 60 s"
            )
        time.sleep(0.5)


def post_labels(collector: str, ids: list[str], traffic: pd.DataFrame) -> int:
    """Post the replayed texts' true labels to the collector (delayed ground truth)."""
    import httpx

    rows = [
        {"id": ids[i // REQUEST_BATCH], "item": i % REQUEST_BATCH, "label": label}
        for i, label in enumerate(traffic["label"])
        if label
    ]
    answer = httpx.post(f"{collector}/labels", json=rows, timeout=30)
    if answer.status_code != 200:
        raise LoopError(f"the collector refused the labels: {answer.status_code} {answer.text}")
    return len(rows)


def served_version(server: str, model_name: str) -> str:
    """The version the predictor answers with now."""
    import httpx

    answer = httpx.post(
        f"{server}/v1/models/{model_name}:predict", json={"instances": ["ok"]}, timeout=30
    )
    return str(answer.json().get("model_version"))


def check_drift(
    store_url: str, model_name: str, bundle_dir: Path, out_dir: Path, rows: int
) -> DriftJobResult:
    """The drift job on the last `rows` logged texts; its run joins the loop's workspace."""
    from textops.components.monitor.drift_job import (
        OutputPaths,
        WindowSpec,
        fetch_traffic,
        run_drift_job,
    )
    from textops.components.monitor.drift_settings import DriftSettings

    window_spec = WindowSpec(last=rows)
    return run_drift_job(
        bundle_dir=bundle_dir,
        window=fetch_traffic(store_url, model_name, window_spec),
        settings=DriftSettings(),
        paths=OutputPaths.in_dir(out_dir),
        model_name=model_name,
        workspace=out_dir.parent / WORKSPACE_DIR,
        window_spec=window_spec,
        source=store_url,
    )


def run_loop(
    config: TrainingConfig,
    rows: int = 300,
    shifted_rows: int = 1500,
    report: Callable[[str], None] = print,
) -> LoopResult:
    """Train, serve, replay traffic, watch it for drift, retrain on drift; stop what started.

    `rows` in-distribution texts are replayed first, then `shifted_rows` tweets.

    Raises:
        TextopsError: A step of the training pipeline or a service of the loop failed.
    """
    from textops.components.common.model_repository import current_version
    from textops.pipelines.local import preflight, run_training_locally
    from textops.pipelines.retraining import trigger_retraining

    config = preflight(config)
    report("textops: 1/5 training pipeline")
    training = run_training_locally(config)
    published = current_version(config.model_repository, config.model_name)
    if published is None:
        raise LoopError(f"no model is published: {training.reasons}")
    output = Path(config.output_dir).resolve()
    store_url = f"sqlite:///{output / 'monitor' / 'payloads.db'}"
    drift_dir = output / "drift" / config.model_name
    collector_port, server_port = free_port(), free_port()
    collector = f"http://127.0.0.1:{collector_port}"
    server = f"http://127.0.0.1:{server_port}"
    logs = output / "logs"
    phases: list[Phase] = []
    with ExitStack() as running:
        report(f"textops: 2/5 payload collector on {collector} (store {store_url})")
        running.enter_context(
            service(
                "collector",
                [sys.executable, "-m", "textops.components.monitor.collector", "--host",
                 "127.0.0.1", "--port", str(collector_port), "--store", store_url],
                f"{collector}/healthz",
                logs / "collector.log",
            )
        )  # fmt: skip
        report(f"textops: 3/5 KServe predictor on {server}, version {published.version}")
        running.enter_context(
            service(
                "predictor",
                [sys.executable, "-m", "textops.components.serve", "--model-repository",
                 str(config.model_repository), "--model-name", config.model_name,
                 "--http-port", str(server_port), "--payload-logger-url", f"{collector}/events"],
                f"{server}/v2/models/{config.model_name}/ready",
                logs / "predictor.log",
            )
        )  # fmt: skip
        labels = json.loads((published.path / "labels.json").read_text("utf-8"))["labels"]
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for name, traffic in (
            ("in-distribution", in_distribution_traffic(config, published.path, rows)),
            ("shifted", shifted_traffic(labels, shifted_rows, config.seed)),
        ):
            report(f"textops: 4/5 replaying {len(traffic)} {name} texts, then the drift job")
            ids = replay(server, config.model_name, traffic, f"loop-{stamp}-{name}")
            wait_until_stored(store_url, config.model_name, ids, len(traffic))
            post_labels(collector, ids, withhold_labels(traffic) if name == "shifted" else traffic)
            drift = check_drift(
                store_url,
                config.model_name,
                published.path,
                drift_dir / f"{stamp}-{name}",
                len(traffic),
            )
            phases.append(Phase(name, traffic, drift))
        retraining = None
        if phases[-1].drift is not None and phases[-1].drift.drifted:
            report("textops: 5/5 drift found: retraining, then hot-loading into the predictor")
            # The retraining's collect_feedback step reads the labelled tweets from this store.
            retrain = {"serve_url": server, "feedback_store_url": store_url}
            retraining = trigger_retraining(config.model_copy(update=retrain))
        version_after = served_version(server, config.model_name)
    comparison = compare_versions(config, training, published, phases[-1].traffic)
    return LoopResult(
        training,
        phases,
        retraining,
        version_after,
        store_url,
        drift_dir / WORKSPACE_DIR,
        comparison,
    )


def summary_lines(result: LoopResult, config: TrainingConfig) -> list[str]:
    """What the loop prints at its end: where everything is, and how to go on."""
    from textops.pipelines.local import score_lines

    lines = ["", "textops: the whole loop ran"]
    lines.append(f"  published bundle:   {result.training.published_path or 'not published'}")
    lines.append(f"  gate:               {result.training.reasons}")
    lines.extend(score_lines(result.training.metrics))
    lines.append(f"  validation report:  {result.training.validation_report}")
    lines.append(f"  evaluation report:  {result.training.evaluation_report}")
    lines.append(f"  payload store:      {result.store_url}")
    for phase in result.phases:
        assert phase.drift is not None
        verdict = phase.drift.summary.get("status", "")
        reasons = "; ".join(phase.drift.summary.get("reasons", [])[:2])
        lines.append(
            f"  drift, {phase.name + ':':17s}{verdict}{' (' + reasons + ')' if reasons else ''}"
        )
        lines.append(f"    report:           {phase.drift.paths.report}")
    if result.retraining is None:
        lines.append("  retraining:         not started: no drift found")
    else:
        lines.append(f"  retraining:         {result.retraining.detail}")
        lines.extend(score_lines(result.retraining.metrics, indent="    "))
    lines.append(f"  served version:     {result.served_version_after} (predictor stopped)")
    lines.extend(accuracy_lines(result.comparison))
    lines.append(f"  drift history:      .venv/bin/evidently ui --workspace {result.workspace}")
    lines.append("  serve the model:    make serve   (then, in another shell:)")
    lines.append(
        "    curl -s localhost:8080/v1/models/"
        f'{config.model_name}:predict -d \'{{"instances": ["Great battery, fast delivery."]}}\''
    )
    return lines
