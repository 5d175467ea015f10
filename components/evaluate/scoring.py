"""Score a trained model on the held-out test split and render the evaluation report."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from textops.components.common.errors import DataError, ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.metrics import classification_scores, confusion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """Test-split scores of one model."""

    labels: tuple[str, ...]
    rows: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    confusion_matrix: list[list[int]]

    def scalars(self) -> dict[str, float]:
        """The scalar metrics, as logged to the KFP Metrics artifact."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "weighted_f1": self.weighted_f1,
            "test_rows": float(self.rows),
        }


def evaluate_saved_model(
    *, model_dir: str | Path, test_path: str | Path, report_path: str | Path, batch_size: int = 64
) -> EvaluationResult:
    """Score the model saved by the train step on the test split; write the HTML report.

    Raises:
        ModelNotFoundError: `model_dir` holds no loadable model or label map.
        DataError: The test split is empty or holds labels the model does not know.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textops.components.common.torch_inference import batched_logits, pick_device

    model_dir = Path(model_dir)
    if not (model_dir / "labels.json").is_file():
        raise ModelNotFoundError(f"no trained model in {model_dir}: labels.json is missing")
    labels = LabelMap.load(model_dir / "labels.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    except OSError as e:
        raise ModelNotFoundError(f"cannot load the trained model from {model_dir}: {e}") from e

    frame = pd.read_parquet(test_path, columns=["text", "label"])
    if frame.empty:
        raise DataError(f"the test split {test_path} has no rows: nothing to evaluate on")
    y_true = np.array([labels.index(v) for v in frame["label"]])
    device = pick_device("auto")
    model.to(device)
    # The saved tokenizer's model_max_length is the window the model was trained with.
    encodings = dict(tokenizer(frame["text"].astype(str).tolist(), truncation=True))
    with torch.inference_mode():
        logits = batched_logits(
            model,
            encodings,
            pad_token_id=tokenizer.pad_token_id,
            device=device,
            batch_size=batch_size,
        )
    y_pred = logits.argmax(axis=1)
    scores = classification_scores(y_true, y_pred, len(labels))
    result = EvaluationResult(
        labels=labels.names,
        rows=len(frame),
        accuracy=scores["accuracy"],
        macro_f1=scores["macro_f1"],
        weighted_f1=scores["weighted_f1"],
        confusion_matrix=confusion(y_true, y_pred, len(labels)),
    )
    write_report(result, Path(report_path))
    logger.info(
        "evaluated rows=%d accuracy=%.4f macro_f1=%.4f",
        result.rows,
        result.accuracy,
        result.macro_f1,
    )
    return result


def write_report(result: EvaluationResult, path: Path) -> None:
    """A self-contained HTML page: the scores and the confusion matrix."""
    header = "".join(f"<th>{html.escape(name)}</th>" for name in result.labels)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>{''.join(f'<td>{n}</td>' for n in counts)}</tr>"
        for name, counts in zip(result.labels, result.confusion_matrix, strict=True)
    )
    scores = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.4f}</td></tr>"
        for k, v in result.scalars().items()
        if k != "test_rows"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""<!doctype html>
<html><head><meta charset="utf-8"><title>textops evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}</style></head>
<body><h1>Evaluation on the test split</h1>
<p>{result.rows} held-out rows.</p>
<h2>Scores</h2><table>{scores}</table>
<h2>Confusion matrix</h2><p>Rows: true label. Columns: predicted label.</p>
<table><tr><th></th>{header}</tr>{rows}</table>
</body></html>
""",
        encoding="utf-8",
    )
