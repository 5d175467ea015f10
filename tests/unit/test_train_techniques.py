"""The training loop's speed techniques: each changes how fast it runs, not what it learns."""

import threading
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from textops.components.common.errors import TrainingError
from textops.components.common.labels import LabelMap
from textops.components.common.settings import TrainSettings
from textops.components.common.torch_inference import pad_batch
from textops.components.train import checkpoint
from textops.components.train.batching import TokenRows
from textops.components.train.techniques import (
    BUCKET_TOKENS,
    DEFAULT_TECHNIQUES,
    SYNC_EVERY_STEPS,
    Techniques,
    bucketed_width,
    prefetched,
)
from textops.components.train.trainer import TrainResult, train_classifier

LABELS = LabelMap(("negative", "positive"))
ALL_OFF = Techniques(**{name: False for name in Techniques.NAMES})


def test_names_are_the_fields_and_all_but_compile_are_on_by_default() -> None:
    assert tuple(f.name for f in fields(Techniques)) == Techniques.NAMES
    assert Techniques() == DEFAULT_TECHNIQUES
    assert Techniques().enabled() == [n for n in Techniques.NAMES if n != "compile"]


def test_without_switches_one_technique_off() -> None:
    fewer = Techniques().without("prefetch")
    assert not fewer.prefetch
    assert fewer.enabled() == [n for n in Techniques.NAMES if n not in ("prefetch", "compile")]
    assert Techniques().prefetch, "the original is unchanged"
    with pytest.raises(ValueError, match=r"'prefetching'.*bucket_shapes.*compile"):
        Techniques().without("prefetching")


@pytest.mark.parametrize(
    ("longest", "max_length", "bucketed"),
    [(1, 128, 16), (16, 128, 16), (17, 128, 32), (120, 128, 128), (128, 128, 128), (97, 100, 100)],
)
def test_bucketed_width_rounds_up_to_the_bucket_and_stops_at_the_window(
    longest: int, max_length: int, bucketed: int
) -> None:
    assert bucketed_width(longest, max_length, bucket=True) == bucketed
    assert bucketed_width(longest, max_length, bucket=False) == longest


def test_bucketing_leaves_at_most_a_few_shapes() -> None:
    widths = {bucketed_width(n, 128, bucket=True) for n in range(1, 129)}
    assert widths == set(range(BUCKET_TOKENS, 129, BUCKET_TOKENS))


def _encoding() -> dict[str, list[list[int]]]:
    ids = [[101, 7, 8, 102], [101, 9, 102], [101, 5, 6, 7, 8, 102]]
    return {
        "input_ids": ids,
        "token_type_ids": [[0] * len(r) for r in ids],
        "attention_mask": [[1] * len(r) for r in ids],
    }


def test_batches_are_bucketed_only_where_shapes_are_reused() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert Techniques().buckets_on(cuda)
    assert not Techniques().buckets_on(cpu)  # padding is compute there, with nothing reused
    assert Techniques(compile=True).buckets_on(cpu)  # a compiled graph per shape
    assert not Techniques(bucket_shapes=False).buckets_on(cuda)


def test_token_rows_cut_the_same_batch_as_padding_lists() -> None:
    encoding = _encoding()
    rows = TokenRows(encoding, pad_token_id=0)
    assert rows.lengths.tolist() == [4, 3, 6]
    indices = np.array([1, 0])
    expected = pad_batch(encoding, indices, pad_token_id=0)  # padded to its longest row, 4
    got = rows.batch(indices, width=4)
    assert set(got) == set(expected)
    assert all(torch.equal(torch.from_numpy(got[k]), expected[k]) for k in expected)
    wide = rows.batch(indices, width=16)  # a bucket wider than the split's longest row
    assert wide["input_ids"].shape == (2, 16)
    assert (wide["input_ids"][:, 4:] == 0).all() and (wide["attention_mask"][:, 4:] == 0).all()
    assert (wide["input_ids"][:, :4] == got["input_ids"]).all()


def test_bucket_padding_leaves_the_logits_alone(tiny_model_dir: Path) -> None:
    """The attention mask hides the extra pads: the same logits within float tolerance."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    texts = ["a fine phone", "the battery died after a week and support never answered", "ok"]
    rows = TokenRows(dict(tokenizer(texts, truncation=True, max_length=32)), 0)
    indices = np.arange(3)
    longest = int(rows.lengths.max())
    bucket = bucketed_width(longest, 32, bucket=True)
    assert bucket > longest, "the test needs a batch that bucketing pads"
    with torch.inference_mode():
        logits = {
            width: model(
                **{k: torch.from_numpy(v) for k, v in rows.batch(indices, width).items()}
            ).logits
            for width in (longest, bucket)
        }
    torch.testing.assert_close(logits[bucket], logits[longest], atol=1e-5, rtol=1e-5)
    assert logits[longest].abs().max() > 0.1  # not a model whose outputs are all zero


def test_prefetch_yields_every_item_in_order() -> None:
    assert list(prefetched(range(100))) == list(range(100))
    assert list(prefetched(iter([]))) == []


def test_prefetch_raises_the_producers_error_in_the_consumer() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    ahead = prefetched(failing())
    assert next(ahead) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(ahead)


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    before = threading.active_count()
    ahead = prefetched(iter(range(1000)), depth=2)
    assert next(ahead) == 0
    ahead.close()
    assert threading.active_count() == before


def _train(
    model_dir: Path,
    splits: dict[str, Path],
    out: Path,
    techniques: Techniques = DEFAULT_TECHNIQUES,
    checkpoint_dir: Path | None = None,
    **overrides: object,
) -> TrainResult:
    settings = TrainSettings.model_validate(
        {"base_model": str(model_dir), "max_seq_length": 32, "epochs": 2, "batch_size": 16,
         "seed": 3, **overrides}
    )  # fmt: skip
    return train_classifier(
        train_path=splits["train"], validation_path=splits["validation"], labels=LABELS,
        settings=settings, output_dir=out, checkpoint_dir=checkpoint_dir, techniques=techniques,
    )  # fmt: skip


def _weights(result_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(result_dir).state_dict()


@pytest.mark.parametrize("name", ["prefetch", "deferred_sync"])
def test_host_side_techniques_train_the_very_same_model(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """Same batches, same order, same arithmetic: so a resumed run stays bit-identical too."""
    _train(tiny_model_dir, tiny_splits, tmp_path / "on")
    _train(tiny_model_dir, tiny_splits, tmp_path / "off", Techniques().without(name))
    on, off = _weights(tmp_path / "on"), _weights(tmp_path / "off")
    assert all(torch.equal(on[k], off[k]) for k in on)


def test_all_techniques_on_and_off_learn_alike(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    """Bucketing changes dropout's draws and eager attention the float order, nothing more."""
    runs = {
        name: _train(
            tiny_model_dir, tiny_splits, tmp_path / name, techniques, epochs=3, learning_rate=1e-3
        )
        for name, techniques in (("on", DEFAULT_TECHNIQUES), ("off", ALL_OFF))
    }
    for result in runs.values():
        losses = [h["train_loss"] for h in result.history]
        assert all(np.isfinite(losses))
        assert losses[-1] < losses[0], losses  # it learns
    on, off = (runs[name].history[-1] for name in ("on", "off"))
    # 24 steps of a random tiny model: the losses agree to within their noise, not to digits.
    assert on["train_loss"] == pytest.approx(off["train_loss"], rel=0.25)
    assert abs(on["accuracy"] - off["accuracy"]) <= 0.15  # 40 validation rows: 6 of them
    # On a CPU batches are not bucketed (`Techniques.buckets_on`): both pad alike.
    assert off["padded_tokens_per_second"] / off["tokens_per_second"] == pytest.approx(
        on["padded_tokens_per_second"] / on["tokens_per_second"]
    )


def _diverging_model(tiny_model_dir: Path, directory: Path) -> Path:
    """The tiny model with an infinite classifier bias: the loss is NaN from the first step."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.classifier.bias.fill_(float("inf"))
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("techniques", [DEFAULT_TECHNIQUES, ALL_OFF], ids=["deferred", "per-step"])
def test_a_non_finite_loss_names_the_learning_rate_before_any_checkpoint(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path, techniques: Techniques
) -> None:
    model_dir = _diverging_model(tiny_model_dir, tmp_path / "diverging")
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    assert SYNC_EVERY_STEPS > 3, "the test needs a checkpoint before the deferred read"
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1: lower learning_rate"):
        _train(model_dir, tiny_splits, out, techniques, ckpt, checkpoint_every_steps=3)
    assert not (ckpt / checkpoint.CHECKPOINT_FILE).exists()
    assert not out.exists()


@pytest.mark.slow
def test_compiled_training_saves_the_bare_model_and_learns(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    """torch.compile wraps only the training forward; the saved weights keep their names."""
    result = _train(
        tiny_model_dir, tiny_splits, tmp_path / "compiled", Techniques(compile=True), epochs=1
    )
    assert np.isfinite(result.history[0]["train_loss"])
    trained, original = _weights(tmp_path / "compiled"), _weights(tiny_model_dir)
    assert trained.keys() == original.keys()
    assert not torch.equal(trained["classifier.weight"], original["classifier.weight"])
