"""Long documents whose class is decided at their end: head_tail must beat plain truncation.

The documents are the sample sentences joined: filler sentences of both labels (about 300
tokens, more than the 128-token window) followed by three sentences of the document's label.
Truncation to the first 128 tokens reads only filler, so it can do little better than chance;
head_tail reads the first 32 and the last 94 tokens, which hold the ending. The default base
model is fine-tuned twice on the same split, once with each strategy, and scored on held-out
documents built from sentences neither run saw; the TF-IDF + logistic regression baseline,
which reads whole documents, is scored beside them.

Slow: two fine-tunings of the default model, one epoch on 320 documents each (about ten
minutes on 2 busy CPU cores; the rows are few so that it fits).
Run with `-s` to see the figures docs/benchmarks.md quotes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from textops.components.common.config import sample_data_path
from textops.components.common.labels import LabelMap
from textops.components.common.settings import TrainSettings

pytestmark = pytest.mark.slow

#: Documents per split.
ROWS = {"train": 320, "validation": 40, "test": 200}
#: Sentences of the document's label at its end.
ENDING_SENTENCES = 3
#: Filler before the ending, in characters (about 300 tokens of the sample sentences).
FILLER_CHARS = 1400
#: How far head_tail must beat head, in accuracy.
MARGIN = 0.10


def _documents(sentences: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """`rows` documents of filler then `ENDING_SENTENCES` sentences of the document's label."""
    by_label = {label: group["text"].tolist() for label, group in sentences.groupby("label")}
    pool = sentences["text"].tolist()
    labels = sorted(by_label)
    documents = []
    for _ in range(rows):
        label = labels[int(rng.integers(len(labels)))]
        filler: list[str] = []
        while sum(len(s) + 1 for s in filler) < FILLER_CHARS:
            filler.append(pool[int(rng.integers(len(pool)))])
        ending = [
            by_label[label][int(rng.integers(len(by_label[label])))]
            for _ in range(ENDING_SENTENCES)
        ]
        documents.append({"text": " ".join(filler + ending), "label": label})
    return pd.DataFrame(documents)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train, validation and test documents; the test ones from sentences training never saw."""
    sentences = pd.read_csv(sample_data_path(), dtype=str)[["text", "label"]]
    sentences = sentences.sample(frac=1.0, random_state=0).reset_index(drop=True)
    held_out = len(sentences) // 4
    pools = {"train": sentences.iloc[held_out:], "validation": sentences.iloc[held_out:]}
    pools["test"] = sentences.iloc[:held_out]
    rng = np.random.default_rng(0)
    directory = tmp_path_factory.mktemp("long-documents")
    paths = {}
    for split, rows in ROWS.items():
        paths[split] = directory / f"{split}.parquet"
        _documents(pools[split], rows, rng).to_parquet(paths[split], index=False)
    return paths


def _train_and_score(splits: dict[str, Path], strategy: Any, output: Path) -> float:
    from textops.components.evaluate.classifiers import TorchClassifier
    from textops.components.train.trainer import train_classifier

    labels = LabelMap(("negative", "positive"))
    settings = TrainSettings(
        long_text_strategy=strategy, epochs=1, batch_size=8, learning_rate=1e-4, seed=0
    )
    train_classifier(
        train_path=splits["train"],
        validation_path=splits["validation"],
        labels=labels,
        settings=settings,
        output_dir=output,
    )
    model = TorchClassifier.from_model_dir(output, device="cpu")
    assert model.long_text_strategy == strategy  # evaluation reads what training recorded
    test = pd.read_parquet(splits["test"])
    predicted = model.predict_proba(test["text"].tolist()).argmax(axis=1)
    truth = np.array([labels.index(label) for label in test["label"]])
    return float(np.mean(predicted == truth))


def test_head_tail_reads_the_ending_that_truncation_cuts(
    splits: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from textops.components.common.config import resolve_base_model
    from textops.components.evaluate.baseline import train_and_score_baseline

    test = pd.read_parquet(splits["test"])
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(TrainSettings().base_model))
    tokens = [len(ids) for ids in tokenizer(test["text"].tolist())["input_ids"]]
    assert min(tokens) > 2 * TrainSettings().max_seq_length  # every document is long

    head = _train_and_score(splits, "head", tmp_path / "head")
    head_tail = _train_and_score(splits, "head_tail", tmp_path / "head_tail")
    labels = ("negative", "positive")
    baseline = train_and_score_baseline(
        pd.read_parquet(splits["train"]),
        test["text"].tolist(),
        [labels.index(label) for label in test["label"]],
        labels,
    )
    print(  # the figures docs/benchmarks.md quotes, shown with -s
        f"test_rows={len(test)} tokens_median={int(np.median(tokens))} "
        f"head_accuracy={head:.4f} head_tail_accuracy={head_tail:.4f} "
        f"baseline_accuracy={baseline.scores.accuracy if baseline.scores else float('nan'):.4f}"
    )
    assert head_tail >= head + MARGIN
