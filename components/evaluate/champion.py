"""Score the model in production on the challenger's test texts.

The champion is the bundle in production (`common.production_model`: the version
`current.json` points to in the local model repository, or the bundle a KServe
InferenceService serves, fetched from its storageUri), run with ONNX Runtime exactly as
serving runs it; or, given the base URL of the server that serves it, the model behind that
server's V2 infer route.
Whatever keeps it from being scored (a damaged pointer, a missing or altered file, a graph
ONNX Runtime cannot load; a server that does not answer, or answers nonsense) becomes an
`unreadable` result with the error, which the gate turns into a refusal: a champion that
cannot be compared never lets a challenger through unchecked.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from textops.components.common.bundle import ModelBundle
from textops.components.common.errors import (
    ConfigError,
    ModelNotFoundError,
    PublishError,
    RemoteModelError,
)
from textops.components.common.labels import LabelSetChange
from textops.components.common.model_repository import CURRENT_FILE
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.common.production_model import (
    InferenceServiceTarget,
    ProductionTarget,
    RepositoryTarget,
    open_production_bundle,
)
from textops.components.evaluate.classifiers import RemoteClassifier, v2_model_url
from textops.components.evaluate.gate import ChampionResult
from textops.components.evaluate.scoring import score_model

logger = logging.getLogger(__name__)


def load_champion(path: Path) -> OnnxClassifier:
    """Open the bundle at `path`, check its files against their hashes, load the model file
    the predictor serves by default (`ModelBundle.serving_precision`).

    Raises:
        ModelNotFoundError: The bundle is incomplete or a file differs from its recorded hash.
        Exception: Whatever ONNX Runtime or `tokenizers` raise for a file they cannot parse
            (their exception types derive from Exception only).
    """
    bundle = ModelBundle.open(path)
    altered = bundle.verify_hashes()
    if altered:
        raise ModelNotFoundError(
            f"{', '.join(altered)} differ from the SHA-256 recorded in metadata.json "
            "(the files were changed after publishing)"
        )
    # The model file production answers with: a gate that scored model.onnx while the
    # predictor serves model.int8.onnx would judge another model than the one in production.
    return OnnxClassifier.from_bundle(path, precision=bundle.serving_precision)


def score_champion(
    repository: str | Path,
    model_name: str,
    texts: Sequence[str],
    true_labels: Sequence[str],
    challenger_labels: Sequence[str],
    champion_url: str = "",
    kserve_namespace: str | None = None,
) -> ChampionResult:
    """Score the model in production on the same texts the challenger was scored on.

    Args:
        repository: The local model repository's root.
        model_name: The model's name in the repository or on the server.
        texts: The test split's texts.
        true_labels: Their labels, as names (the champion may order its classes differently).
        challenger_labels: The new model's classes; the champion must have the same set.
        champion_url: The base URL (http:// or https://) of the server that serves the
            model in production (an InferenceService); when given, it is scored there
            instead of from the repository.
        kserve_namespace: Without `champion_url`: the namespace of the InferenceService
            `model_name`, whose bundle (fetched from its storageUri) is the champion instead
            of the repository's current version.

    Returns:
        `none` when nothing is published, `labels_differ` when the champion's label set is not
        the challenger's (one class added or dropped is enough), `unreadable` with the error
        when it cannot be scored, else `scored`.
    """
    if champion_url.strip():
        return score_served_champion(
            champion_url.strip(), model_name, texts, true_labels, challenger_labels
        )
    target: ProductionTarget = (
        InferenceServiceTarget(kserve_namespace)
        if kserve_namespace is not None
        else RepositoryTarget(repository)
    )
    with tempfile.TemporaryDirectory(prefix="textops-champion-") as scratch:
        try:
            opened = open_production_bundle(model_name, target, Path(scratch))
        except PublishError as e:  # the local repository's pointer
            pointer = Path(repository) / model_name / CURRENT_FILE
            logger.warning("champion unreadable pointer=%s error=%s", pointer, e)
            return ChampionResult("unreadable", path=pointer, error=str(e))
        except (ConfigError, ModelNotFoundError) as e:  # the InferenceService's bundle
            logger.warning("champion unreadable %s model=%s error=%s", target, model_name, e)
            return ChampionResult(
                "unreadable", error=f"the model in production cannot be fetched: {e}"
            )
        if opened is None:
            logger.info("no champion %s model=%s", target, model_name)
            return ChampionResult("none")
        found, directory = opened
        logger.info("champion location=%s version=%s", found.location, found.version)
        result = _score_bundle(found.version, directory, texts, true_labels, challenger_labels)
    if isinstance(target, InferenceServiceTarget):
        # The copy is gone after this; the report names where the bundle is (without the
        # scheme, as for a served champion's route).
        return dataclasses.replace(result, path=Path(found.location.split("://", 1)[-1]))
    return result


def _score_bundle(
    version: int | None,
    path: Path,
    texts: Sequence[str],
    true_labels: Sequence[str],
    challenger_labels: Sequence[str],
) -> ChampionResult:
    """Load the champion bundle at `path` with ONNX Runtime, as serving runs it, and score it."""
    try:
        classifier = load_champion(path)
        labels = classifier.labels
        if LabelSetChange.between(labels.names, challenger_labels):
            return ChampionResult("labels_differ", version, path, labels=labels.names)
        probabilities = classifier.predict_proba(list(texts))
    # Deliberately broad: ONNX Runtime and tokenizers raise bare Exception subclasses, and
    # any failure here must become a recorded refusal, never a crash without a decision.
    except Exception as e:
        logger.warning("champion unreadable path=%s error=%s", path, e)
        return ChampionResult("unreadable", version, path, error=f"{type(e).__name__}: {e}")
    scores = score_model([labels.index(n) for n in true_labels], probabilities, labels.names)
    logger.info(
        "champion scored version=%s macro_f1=%.4f accuracy=%.4f",
        version,
        scores.macro_f1,
        scores.accuracy,
    )
    return ChampionResult("scored", version, path, labels=labels.names, scores=scores)


def score_served_champion(
    base_url: str,
    model_name: str,
    texts: Sequence[str],
    true_labels: Sequence[str],
    challenger_labels: Sequence[str],
    *,
    batch_size: int = 64,
    timeout_seconds: float = 60.0,
) -> ChampionResult:
    """Score the model a server answers for, through its V2 infer route.

    Args:
        base_url: The server's base URL, e.g. the InferenceService's URL.
        model_name: The model's name on the server.
        texts: The test split's texts.
        true_labels: Their labels, as names.
        challenger_labels: The new model's classes; the champion must have the same set.
        batch_size: Texts per infer request.
        timeout_seconds: Longest wait for one answer.

    Returns:
        As `score_champion`; the result's path is the model's route without the scheme
        (host/v2/models/<name>), its version the one the server reports.
    """
    url = v2_model_url(base_url, model_name)
    where = Path(url.split("://", 1)[1])
    remote: RemoteClassifier | None = None
    try:
        remote = RemoteClassifier.connect(
            base_url, model_name, batch_size=batch_size, timeout_seconds=timeout_seconds
        )
        # The labels come with the metadata or, from the textops predictor, with every
        # answer: a label set known up front spares scoring a model of other classes.
        if remote.labels.names and LabelSetChange.between(remote.labels.names, challenger_labels):
            return _labels_differ(remote, where)
        probabilities = remote.predict_proba(list(texts))
        labels = remote.labels
        if LabelSetChange.between(labels.names, challenger_labels):
            return _labels_differ(remote, where)
    except RemoteModelError as e:
        logger.warning("champion unreadable url=%s error=%s", url, e)
        return ChampionResult(
            "unreadable",
            _version(remote.version) if remote is not None else None,
            where,
            error=f"RemoteModelError: {e}. Check that the model serves at {base_url} "
            "(`kubectl get inferenceservice`); before the first deploy there is no model to "
            "compare with: leave champion_url empty",
        )
    scores = score_model([labels.index(n) for n in true_labels], probabilities, labels.names)
    logger.info(
        "champion scored url=%s version=%s macro_f1=%.4f accuracy=%.4f",
        url,
        remote.version,
        scores.macro_f1,
        scores.accuracy,
    )
    return ChampionResult(
        "scored", _version(remote.version), where, labels=labels.names, scores=scores
    )


def _labels_differ(remote: RemoteClassifier, where: Path) -> ChampionResult:
    return ChampionResult(
        "labels_differ", _version(remote.version), where, labels=remote.labels.names
    )


def _version(reported: str | None) -> int | None:
    """The served version as a number, when the server reports one that is."""
    try:
        return int(reported) if reported is not None else None
    except ValueError:
        return None
