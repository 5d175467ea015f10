"""The INT8 graphs `bench_export.py` compares, and how each is scored besides its speed.

- `int8`: the graph the export step ships (static QDQ, calibrated on the train split).
- `int8_dynamic`: the recipe export shipped before, quantized here from the same unfused graph
  (dynamic activation scales, per-channel INT8 weights): the baseline.
- with `--compare-int8`, two variations of the shipped recipe: every consumer reading the
  rounded activations (what `quantize_static` writes), and per-tensor weight scales.

Each is scored as the export step scores INT8 (accuracy and macro-F1 against model.onnx on
the validation split, batches of `parity.BATCH_SIZE`), on the test split too, by the export
step's batch-invariance check, and over every validation text: alone, then in random batches
of `RANDOM_BATCH` texts, as coalesced requests share a call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Texts per batch when every validation text is classified among random neighbours.
RANDOM_BATCH = 8
SEED = 0


def quantize_dynamic_int8(source: Path, target: Path) -> Path:
    """The former export recipe: INT8 weights per channel, activation scales per call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return target


def quantize_static_as_export_does(
    unfused: Path,
    target: Path,
    bundle: Path,
    train_texts: list[str],
    seed: int,
    **options: Any,
) -> Path:
    """The shipped recipe on the same calibration sample export draws; `options` vary it."""
    import pandas as pd

    from textops.components.export import variants
    from textops.components.export.optimize import quantize_int8
    from textops.components.export.reference import reference_sample

    sample = reference_sample(
        pd.DataFrame({"text": train_texts}), max_rows=variants.CALIBRATION_MAX_TEXTS, seed=seed
    )
    classifier = open_graph(unfused, bundle)
    batches = variants.calibration_batches(classifier, sample["text"].tolist())
    quantize_int8(
        unfused,
        target,
        calibration=batches,
        per_channel=options.get("per_channel", variants.INT8_PER_CHANNEL),
        float_consumers=options.get("float_consumers", True),
    )
    return target


def variations(unfused: Path, bundle: Path, train_texts: list[str], seed: int) -> dict[str, Path]:
    """The shipped recipe with one choice changed at a time (`--compare-int8`)."""
    work = unfused.parent
    return {
        "int8_all_consumers": quantize_static_as_export_does(
            unfused, work / "all_consumers.onnx", bundle, train_texts, seed, float_consumers=False
        ),
        "int8_per_tensor": quantize_static_as_export_does(
            unfused, work / "per_tensor.onnx", bundle, train_texts, seed, per_channel=False
        ),
    }


def open_graph(path: Path, bundle: Path) -> Any:
    from textops.components.common.bundle import ModelBundle
    from textops.components.common.onnx_classifier import OnnxClassifier

    opened = ModelBundle.open(bundle)
    return OnnxClassifier(
        path,
        opened.tokenizer_path,
        opened.labels,
        int(opened.metadata["max_seq_length"]),
        providers=["CPUExecutionProvider"],
    )


def score(
    graphs: dict[str, Path], bundle: Path, splits: dict[str, tuple[list[str], np.ndarray]]
) -> dict[str, Any]:
    """Quality against model.onnx per split, batch invariance, and answers in random batches."""
    from textops.components.common.batch_invariance import check_batch_invariance
    from textops.components.common.bundle import MODEL_FILE
    from textops.components.export import parity

    fp32 = open_graph(bundle / MODEL_FILE, bundle)
    fp32_logits = {
        name: parity.onnx_logits(fp32, texts, f"fp32 {name}") for name, (texts, _) in splits.items()
    }
    scores: dict[str, Any] = {}
    for graph, path in graphs.items():
        classifier = open_graph(path, bundle)
        quality = {}
        for split, (texts, label_ids) in splits.items():
            logits = parity.onnx_logits(classifier, texts, f"{graph} {split}")
            report = parity.quality_report(
                fp32_logits[split], logits, label_ids, parity.INT8_MAX_LOSS_POINTS
            )
            quality[split] = report.to_dict()
        invariance = check_batch_invariance(classifier, splits["validation"][0], "int8")
        scores[graph] = {
            "quality": quality,
            "batch_invariance": invariance.to_dict(),
            "random_batches": random_batches(classifier, splits["validation"][0]),
            "bytes": path.stat().st_size,
        }
    return scores


def random_batches(classifier: Any, texts: list[str]) -> dict[str, Any]:
    """Every text alone, then among `RANDOM_BATCH - 1` random others: how far answers move."""
    from textops.components.common.onnx_classifier import softmax

    alone = np.vstack([softmax(classifier.run(classifier.encode([t]))) for t in texts])
    order = np.random.default_rng(SEED).permutation(len(texts))
    batched = np.empty_like(alone)
    for start in range(0, len(texts), RANDOM_BATCH):
        rows = order[start : start + RANDOM_BATCH]
        batched[rows] = softmax(classifier.run(classifier.encode([texts[i] for i in rows])))
    return {
        "texts": len(texts),
        "batch": RANDOM_BATCH,
        "label_changes": int((batched.argmax(-1) != alone.argmax(-1)).sum()),
        "max_prob_diff": float(np.abs(batched - alone).max()),
    }


def print_scores(scores: dict[str, Any], cpu: dict[str, Any]) -> None:
    """One line per INT8 graph: quality per split, batch invariance, throughput."""
    print("\nINT8: against fp32 on true labels, batch invariance, speed against dynamic INT8")
    for name, figures in scores.items():
        quality = figures["quality"]
        cells = [
            f"{split} acc {q['accuracy']:.4f} vs {q['fp32_accuracy']:.4f} "
            f"same verdict {q['agreement_with_fp32']['argmax_agreement']:.2%}"
            for split, q in quality.items()
        ]
        moved = figures["random_batches"]
        speed = " ".join(
            f"{shape} {shape_figures[name]['sequences_per_s']:.0f}/s"
            for shape, shape_figures in cpu.items()
            if shape.startswith(("1x", "32x"))
        )
        print(
            f"{name:>20}: {'; '.join(cells)}; invariant "
            f"{figures['batch_invariance']['passed']} (max prob diff "
            f"{figures['batch_invariance']['max_prob_diff']:.3g}); random batches: "
            f"{moved['label_changes']} label changes of {moved['texts']}, max prob diff "
            f"{moved['max_prob_diff']:.3g}; {speed}"
        )
