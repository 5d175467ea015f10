"""OnnxClassifier on the tiny model's bundle, with the real ONNX Runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textops.components.common.batch_invariance import MAX_PROB_DIFF
from textops.components.common.errors import ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.onnx_classifier import OnnxClassifier, load_tokenizer, softmax

TEXTS = [
    "Great food and friendly staff.",
    "Awful.",
    "The battery died after two days and support never answered my emails, twice.",
    "ok",
    "I would not go back, the service was slow and the soup was cold when it arrived.",
    "",
]


@pytest.fixture(scope="module")
def classifier(tiny_bundle_dir: Path) -> OnnxClassifier:
    return OnnxClassifier.from_bundle(tiny_bundle_dir, intra_op_threads=1)


def test_from_bundle_reads_labels_inputs_and_window(
    classifier: OnnxClassifier, tiny_bundle_dir: Path
) -> None:
    assert classifier.labels == LabelMap.load(tiny_bundle_dir / "labels.json")
    assert classifier.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert classifier.max_seq_length == 32
    assert classifier.providers[-1] == "CPUExecutionProvider"


def test_outputs_have_one_row_per_text_and_probabilities_sum_to_one(
    classifier: OnnxClassifier,
) -> None:
    logits = classifier.logits(TEXTS)
    probs = classifier.predict_proba(TEXTS)
    assert logits.dtype == np.float32 and logits.shape == (len(TEXTS), 2)
    assert probs.shape == logits.shape
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert ((probs >= 0) & (probs <= 1)).all()
    labels = classifier.predict(TEXTS)
    assert labels == [classifier.labels.names[i] for i in logits.argmax(axis=1)]


def test_results_do_not_depend_on_batching_or_order(classifier: OnnxClassifier) -> None:
    # Texts are regrouped by length inside `logits`; each must still come back in its row.
    together = classifier.logits(TEXTS, batch_size=64)
    in_pairs = classifier.logits(TEXTS, batch_size=2)
    one_by_one = np.vstack([classifier.logits([t]) for t in TEXTS])
    reversed_rows = classifier.logits(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(in_pairs, together, atol=1e-5)
    np.testing.assert_allclose(one_by_one, together, atol=1e-5)
    np.testing.assert_allclose(reversed_rows, together, atol=1e-5)
    # Distinct texts give distinct logits: rows were not mixed up or broadcast.
    assert len({tuple(np.round(row, 4)) for row in together}) == len(TEXTS)


def test_int8_results_do_not_depend_on_batching_either(int8_bundle_dir: Path) -> None:
    # Static INT8: every scale is fixed in the graph, so regrouping cannot move an answer.
    int8 = OnnxClassifier.from_bundle(int8_bundle_dir, precision="int8", intra_op_threads=1)
    together = int8.predict_proba(TEXTS, batch_size=64)
    one_by_one = np.vstack([int8.predict_proba([t]) for t in TEXTS])
    np.testing.assert_allclose(one_by_one, together, atol=MAX_PROB_DIFF["int8"])
    assert int8.predict(TEXTS) == [int8.predict([t])[0] for t in TEXTS]


def test_encode_pads_to_longest_and_truncates_to_window(classifier: OnnxClassifier) -> None:
    short = classifier.encode(["ok", "a few more words here"])
    ids, mask = short["input_ids"], short["attention_mask"]
    assert ids.dtype == np.int64 and ids.shape[0] == 2
    assert ids.shape[1] < classifier.max_seq_length  # padded to the batch's longest, no more
    assert mask[1].all() and not mask[0].all()  # the short text is padded, the long one not
    long = classifier.encode(["word " * 200])
    assert long["input_ids"].shape == (1, classifier.max_seq_length)


def test_softmax_is_stable_for_large_logits() -> None:
    probs = softmax(np.array([[1000.0, 0.0], [-1000.0, -1000.0]], dtype=np.float32))
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs, [[1.0, 0.0], [0.5, 0.5]], atol=1e-6)


def test_empty_input_gives_empty_output(classifier: OnnxClassifier) -> None:
    assert classifier.logits([]).shape == (0, 2)
    assert classifier.predict([]) == []


def test_a_single_string_is_refused(classifier: OnnxClassifier) -> None:
    with pytest.raises(TypeError, match="list of texts"):
        classifier.predict("not a list")


def test_int8_without_an_int8_model_is_refused(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))
    (bundle / "model.int8.onnx").unlink(missing_ok=True)  # whether or not export shipped one
    with pytest.raises(ModelNotFoundError, match="no INT8 model"):
        OnnxClassifier.from_bundle(bundle, int8=True)
    with pytest.raises(ModelNotFoundError, match="load it with precision='fp32'"):
        OnnxClassifier.from_bundle(bundle, precision="int8")


def test_label_map_of_the_wrong_size_is_refused(tiny_bundle_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="do not belong together"):
        OnnxClassifier(
            tiny_bundle_dir / "model.onnx",
            tiny_bundle_dir / "tokenizer.json",
            LabelMap(("a", "b", "c")),
            max_seq_length=32,
        )


def test_tokenizer_without_padding_settings_still_pads(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    from tokenizers import Tokenizer

    bare = Tokenizer.from_file(str(tiny_bundle_dir / "tokenizer.json"))
    bare.no_padding()
    bare.save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json", max_seq_length=16)
    encodings = tokenizer.encode_batch(["ok", "several more words than that"])
    assert len(encodings[0].ids) == len(encodings[1].ids)
    assert encodings[0].ids[-1] == bare.token_to_id("[PAD]")


def test_module_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, textops.components.common.onnx_classifier; "
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_fp16_without_cuda_loads_with_a_warning(
    tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    classifier = OnnxClassifier.from_bundle(
        tiny_bundle_dir, precision="fp16", providers=["CPUExecutionProvider"]
    )
    assert classifier.model_path.name == "model.fp16.onnx"
    assert "runs without CUDA" in caplog.text
    assert classifier.logits(TEXTS).shape == (len(TEXTS), 2)
