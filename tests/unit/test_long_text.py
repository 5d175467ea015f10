"""The long-text cut (common/long_text.py) and that every stage makes the same one.

The tiny model's window is 32 tokens (30 text tokens): head_tail keeps the first 8 and the
last 22. Training and evaluation tokenize with the Hugging Face tokenizer, export and serving
with the bundle's tokenizer.json; both must give the same ids, long texts included.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tests.conftest import TINY_MAX_SEQ_LENGTH
from textops.components.common.config import sample_data_path
from textops.components.common.long_text import (
    CHARS_PER_TOKEN_BOUND,
    DEFAULT_STRATEGY,
    STRATEGY_KEY,
    bound_text,
    char_bound,
    cut_window,
    encode_with_hf,
    head_tokens,
    recorded_strategy,
)
from textops.components.common.onnx_classifier import OnnxClassifier, load_tokenizer
from textops.components.common.settings import TrainSettings

# A text of 10 ids: [CLS]=100, text tokens 0..7, [SEP]=101.
IDS = [100, 0, 1, 2, 3, 4, 5, 6, 7, 101]
SPECIAL = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]


def _hf_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return pd.read_csv(sample_data_path(), dtype=str)["text"].tolist()


@pytest.fixture(scope="module")
def long_texts(sentences: list[str]) -> list[str]:
    """Texts of the sample sentences, from one sentence to a 200,000-character document."""
    rng = np.random.default_rng(0)
    texts = []
    for count in (1, 3, 10, 40, 300, 3000):
        picked = rng.choice(len(sentences), size=count)
        texts.append(" ".join(sentences[i] for i in picked))
    return texts


def test_a_text_within_the_window_is_unchanged() -> None:
    for strategy in ("head", "head_tail"):
        assert cut_window(IDS, SPECIAL, 10, strategy) == IDS
        assert cut_window(IDS, SPECIAL, 12, strategy) == IDS


def test_head_keeps_the_first_text_tokens_and_the_special_ones() -> None:
    assert cut_window(IDS, SPECIAL, 6, "head") == [100, 0, 1, 2, 3, 101]


def test_head_tail_keeps_a_quarter_at_the_front_and_the_rest_from_the_end() -> None:
    # 4 text tokens fit: ceil(4 / 4) = 1 from the front, 3 from the end.
    assert cut_window(IDS, SPECIAL, 6, "head_tail") == [100, 0, 5, 6, 7, 101]
    cut = cut_window(list(range(1000)), [1] + [0] * 998 + [1], 512, "head_tail")
    assert len(cut) == 512
    assert cut[:129] == list(range(129))  # [CLS] and the first 128 text tokens (Sun et al.)
    assert cut[129:] == list(range(617, 1000))  # the last 382 text tokens and [SEP]


def test_the_head_share_follows_the_study() -> None:
    assert head_tokens(510) == 128
    assert head_tokens(30) == 8
    assert head_tokens(1) == 1


def test_a_window_without_room_for_text_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        cut_window(IDS, SPECIAL, 2, "head_tail")


def test_bound_text_keeps_both_ends() -> None:
    assert bound_text("abcdef", 3) == "abcdef"
    assert bound_text("abcdefg", 3) == "abc efg"
    huge = "x" * 2_000_000
    assert len(bound_text(huge, char_bound(128))) == 2 * 128 * CHARS_PER_TOKEN_BOUND + 1


def test_the_setting_defaults_to_head_tail_and_refuses_others() -> None:
    assert TrainSettings().long_text_strategy == DEFAULT_STRATEGY == "head_tail"
    assert TrainSettings(long_text_strategy="head").long_text_strategy == "head"
    with pytest.raises(ValidationError, match="long_text_strategy"):
        TrainSettings(long_text_strategy="tail")


def test_a_model_recording_no_strategy_reads_its_head() -> None:
    assert recorded_strategy({}) == "head"
    assert recorded_strategy(None) == "head"
    assert recorded_strategy({STRATEGY_KEY: "chunks"}) == "head"  # from a newer version
    assert recorded_strategy({STRATEGY_KEY: "head_tail"}) == "head_tail"


def test_head_is_plain_truncation(tiny_model_dir: Path, long_texts: list[str]) -> None:
    tokenizer = _hf_tokenizer(tiny_model_dir)
    truncated = tokenizer(long_texts, truncation=True, max_length=TINY_MAX_SEQ_LENGTH)
    cut = encode_with_hf(tokenizer, long_texts, TINY_MAX_SEQ_LENGTH, "head")
    assert cut["input_ids"] == truncated["input_ids"]
    assert cut["attention_mask"] == truncated["attention_mask"]


@pytest.mark.parametrize("strategy", ["head", "head_tail"])
def test_bounding_the_characters_keeps_the_tokens_of_the_whole_text(
    tiny_model_dir: Path, long_texts: list[str], strategy: Any
) -> None:
    tokenizer = _hf_tokenizer(tiny_model_dir)
    for window in (TINY_MAX_SEQ_LENGTH, 128, 512):
        assert len(long_texts[-1]) > 2 * char_bound(window)  # the bound is reached
        whole = tokenizer(long_texts, truncation=False, return_special_tokens_mask=True)
        expected = [
            cut_window(ids, mask, window, strategy)
            for ids, mask in zip(whole["input_ids"], whole["special_tokens_mask"], strict=True)
        ]
        assert encode_with_hf(tokenizer, long_texts, window, strategy)["input_ids"] == expected


def test_head_tail_reads_the_end_of_a_long_text(tiny_model_dir: Path) -> None:
    tokenizer = _hf_tokenizer(tiny_model_dir)
    text = "opening words. " + "filler " * 500 + "the verdict is awful."
    head = tokenizer.decode(encode_with_hf(tokenizer, [text], 32, "head")["input_ids"][0])
    both = tokenizer.decode(encode_with_hf(tokenizer, [text], 32, "head_tail")["input_ids"][0])
    assert "verdict is awful" not in head
    assert both.startswith("[CLS] opening words.")
    assert both.endswith("the verdict is awful. [SEP]")


@pytest.mark.parametrize("strategy", ["head", "head_tail"])
def test_training_and_serving_tokenizers_give_the_same_ids(
    tiny_model_dir: Path, tiny_bundle_dir: Path, long_texts: list[str], strategy: Any
) -> None:
    training = encode_with_hf(
        _hf_tokenizer(tiny_model_dir), long_texts, TINY_MAX_SEQ_LENGTH, strategy
    )
    serving = load_tokenizer(tiny_bundle_dir / "tokenizer.json", TINY_MAX_SEQ_LENGTH, strategy)
    windows = serving.encode_batch(long_texts)
    for ids, mask, window in zip(
        training["input_ids"], training["attention_mask"], windows, strict=True
    ):
        kept = sum(window.attention_mask)
        assert window.ids[:kept] == ids
        assert window.attention_mask[:kept] == mask
    assert len({len(w.ids) for w in windows}) == 1  # padded to the longest of the batch


def test_an_old_bundle_serves_with_head(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    metadata = json.loads((bundle / "metadata.json").read_text())
    metadata.pop(STRATEGY_KEY, None)  # as export wrote it before the setting existed
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    assert OnnxClassifier.from_bundle(bundle).long_text_strategy == "head"


@pytest.fixture(scope="module")
def head_tail_bundle(
    tiny_model_dir: Path,
    tiny_training_metadata: dict[str, Any],
    export_tiny: Callable[[Path, dict[str, Any], Path], Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path]:
    """The tiny model as training saves it with head_tail, and its exported bundle.

    Export checks on the validation split that tokenizer.json cuts as training did.
    """
    model_dir = tmp_path_factory.mktemp("head-tail-model") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    tokenizer = _hf_tokenizer(model_dir)
    encode_with_hf(tokenizer, ["a text"], TINY_MAX_SEQ_LENGTH, "head_tail")  # as set_up does
    tokenizer.save_pretrained(model_dir)
    bundle = tmp_path_factory.mktemp("head-tail-export") / "bundle"
    export_tiny(model_dir, {**tiny_training_metadata, STRATEGY_KEY: "head_tail"}, bundle)
    return model_dir, bundle


def test_the_strategy_reaches_every_runtime_from_the_bundle(
    head_tail_bundle: tuple[Path, Path], long_texts: list[str]
) -> None:
    from textops.components.evaluate.classifiers import TorchClassifier
    from textops.components.serve.transformer import load_bundle

    model_dir, bundle = head_tail_bundle
    assert json.loads((bundle / "metadata.json").read_text())[STRATEGY_KEY] == "head_tail"
    served = OnnxClassifier.from_bundle(bundle)
    assert served.long_text_strategy == "head_tail"
    assert load_bundle(bundle).tokenizer.strategy == "head_tail"
    evaluated = TorchClassifier.from_model_dir(model_dir, device="cpu")
    assert evaluated.long_text_strategy == "head_tail"
    # Evaluation (PyTorch) and serving (ONNX Runtime) read the same tokens of long texts.
    np.testing.assert_allclose(
        served.logits(long_texts), evaluated.logits(long_texts), atol=1e-4, rtol=1e-4
    )
