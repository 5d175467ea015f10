"""What the model reads of a text longer than its window: the one cut that training,
evaluation, export and serving all make.

A text is tokenized whole (after `bound_text` keeps its two ends, so that its cost is bounded)
and the id list is cut afterwards by `cut_window`, the same function whichever tokenizer made
the ids: the Hugging Face one of training and evaluation (`encode_with_hf`) or the
`tokenizers` one of export and serving (`WindowTokenizer`). Texts that fit the window are
never changed.

Strategies (`TrainSettings.long_text_strategy`):

- ``head``: the first tokens, as plain truncation keeps them; what bundles exported before the
  setting existed were trained with, so it is what they serve.
- ``head_tail`` (the default): the first `head_tokens` and the last tokens of the window. Sun et
  al., "How to Fine-Tune BERT for Text Classification" (2019), found head+tail the best of
  head-only, tail-only and head+tail on long IMDb and Sogou documents, best with about a quarter
  of the window at the front (128 + 382 of 510 tokens). Conclusions, signatures and the last
  message of an e-mail thread sit at the end; the subject and opening at the front.

Imports only the standard library: the serving image has no torch or transformers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

LongTextStrategy = Literal["head", "head_tail"]
#: The strategies, in the order the setting's description lists them.
STRATEGIES: tuple[str, ...] = get_args(LongTextStrategy)
#: What a model is trained with unless told otherwise.
DEFAULT_STRATEGY: LongTextStrategy = "head_tail"
#: What a model that records no strategy was trained with: plain truncation.
LEGACY_STRATEGY: LongTextStrategy = "head"
#: Where metadata.json and the saved Hugging Face tokenizer's config record the strategy.
STRATEGY_KEY = "long_text_strategy"
#: Share of the window's text tokens taken from the front under head_tail (Sun et al.: 128 of
#: 510 was best, a quarter).
HEAD_SHARE = 0.25
#: Characters kept at each end of a text before it is tokenized, per token of the window.
#: English needs 4 to 5 characters a token, the sample sentences at most about 8; 32 leaves a
#: wide margin, so the kept tokens are those of the whole text (a test checks it), while a
#: 2 MB text costs what 2 * 32 * max_seq_length characters cost.
CHARS_PER_TOKEN_BOUND = 32


def check_strategy(strategy: str) -> LongTextStrategy:
    """`strategy` itself when it names a strategy.

    Raises:
        ValueError: It names none.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"long_text_strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    return cast(LongTextStrategy, strategy)


def recorded_strategy(record: Any) -> LongTextStrategy:
    """The strategy a bundle's metadata.json (or a saved tokenizer's config) records; "head",
    what such a model was trained with, when it records none or one this version does not
    know."""
    value = record.get(STRATEGY_KEY) if isinstance(record, Mapping) else None
    return cast(LongTextStrategy, value) if value in STRATEGIES else LEGACY_STRATEGY


def head_tokens(text_tokens: int) -> int:
    """Text tokens head_tail keeps from the front when `text_tokens` fit the window (special
    tokens aside): 128 of 510, 32 of 126."""
    return math.ceil(text_tokens * HEAD_SHARE)


def char_bound(max_seq_length: int) -> int:
    """Characters `bound_text` keeps at each end of a text, for a window of `max_seq_length`."""
    return max_seq_length * CHARS_PER_TOKEN_BOUND


def bound_text(text: str, max_chars: int) -> str:
    """`text` itself, or, when longer than 2 * `max_chars` characters, its first and last
    `max_chars` characters joined by a space.

    A tokenizer reads a whole text before anything cuts it, so a bounded text costs what a
    modest one does. The space keeps the two ends from merging into one word; the middle is
    beyond what either strategy keeps whenever each end holds more tokens than the window.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if len(text) <= 2 * max_chars:
        return text
    return f"{text[:max_chars]} {text[-max_chars:]}"


def cut_window(
    values: Sequence[int],
    special: Sequence[int],
    max_seq_length: int,
    strategy: LongTextStrategy,
) -> list[int]:
    """Cut one tokenized text (ids, or any per-token list) to `max_seq_length` entries.

    The special tokens at either end ([CLS] and [SEP], <s> and </s>) stay where they are;
    the text tokens between them are cut: `head` keeps the first ones, `head_tail` the first
    `head_tokens` and the last. A text that fits comes back unchanged.

    Args:
        values: The per-token values of the whole text, special tokens included.
        special: 1 where the token is a special one, else 0 (the tokenizer's special tokens
            mask), as long as `values`.
        max_seq_length: The window, special tokens included.
        strategy: "head" or "head_tail".
    """
    if len(values) <= max_seq_length:
        return list(values)
    lead = 0
    while lead < len(special) and special[lead]:
        lead += 1
    trail = 0
    while trail < len(special) - lead and special[len(special) - 1 - trail]:
        trail += 1
    room = max_seq_length - lead - trail
    if room < 1:
        raise ValueError(f"max_seq_length {max_seq_length} leaves no room for text tokens")
    body = list(values[lead : len(values) - trail])
    head = room if strategy == "head" else head_tokens(room)
    kept = body[:head] + (body[len(body) - (room - head) :] if room > head else [])
    return [*values[:lead], *kept, *values[len(values) - trail :]]


def encode_with_hf(
    tokenizer: Any, texts: Sequence[str], max_seq_length: int, strategy: LongTextStrategy
) -> dict[str, list[list[int]]]:
    """Tokenize with a Hugging Face tokenizer and cut each text to the window by `strategy`.

    What training and evaluation feed the model; the bundle's `WindowTokenizer` gives the
    same ids (export checks it on the validation split). The tokenizer also records the
    strategy in its `init_kwargs`, so that the model directory it is saved into (beside the
    window, its `model_max_length`) tells evaluation and export how the model read its texts.

    Args:
        tokenizer: A `transformers` tokenizer.
        texts: The texts to encode.
        max_seq_length: Tokens kept per text, special tokens included.
        strategy: "head" or "head_tail".

    Returns:
        Input name (input_ids, attention_mask and the others the tokenizer makes) to one
        unpadded list per text.
    """
    strategy = check_strategy(strategy)
    tokenizer.init_kwargs[STRATEGY_KEY] = strategy
    bound = char_bound(max_seq_length)
    # verbose=False: the uncut sequences are longer than the window on purpose.
    encoded = dict(
        tokenizer(
            [bound_text(text, bound) for text in texts],
            truncation=False,
            return_special_tokens_mask=True,
            verbose=False,
        )
    )
    special = encoded.pop("special_tokens_mask")
    return {
        name: [
            cut_window(row, mask, max_seq_length, strategy)
            for row, mask in zip(rows, special, strict=True)
        ]
        for name, rows in encoded.items()
    }


@dataclass(frozen=True)
class Window:
    """One text as the model reads it, padded to the longest text of its batch."""

    ids: list[int]
    type_ids: list[int]
    #: 1 for a kept token, 0 for padding.
    attention_mask: list[int]


class WindowTokenizer:
    """A `tokenizers.Tokenizer` (a bundle's tokenizer.json) that cuts texts as training did and
    pads each batch to its longest text.

    Example:
        >>> tokenizer = WindowTokenizer(Tokenizer.from_file("tokenizer.json"), 128, "head_tail")
        >>> tokenizer.encode_batch(["a short text", "a longer text than that"])[0].ids
    """

    def __init__(
        self,
        tokenizer: Any,
        max_seq_length: int,
        strategy: LongTextStrategy,
        *,
        pad_id: int = 0,
        pad_type_id: int = 0,
        pad_left: bool = False,
    ) -> None:
        """Wrap `tokenizer`, switching off its own truncation and padding, which this class does.

        Args:
            tokenizer: A `tokenizers.Tokenizer`; it is changed in place.
            max_seq_length: Tokens kept per text, special tokens included.
            strategy: "head" or "head_tail".
            pad_id: The id rows are padded with (the attention mask hides it).
            pad_type_id: The token type id of padding.
            pad_left: Pad at the front of a row, for a model trained padding on the left.
        """
        self.strategy = check_strategy(strategy)
        self.max_seq_length = max_seq_length
        self.pad_id = pad_id
        self.pad_type_id = pad_type_id
        self.pad_left = pad_left
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer

    def encode_batch(self, texts: Sequence[str]) -> list[Window]:
        """Each text bounded (`bound_text`), tokenized whole, cut to the window, and padded to
        the longest of the batch."""
        bound = char_bound(self.max_seq_length)
        cut = []
        for encoding in self.tokenizer.encode_batch([bound_text(t, bound) for t in texts]):
            mask = encoding.special_tokens_mask
            cut.append(
                (
                    cut_window(encoding.ids, mask, self.max_seq_length, self.strategy),
                    cut_window(encoding.type_ids, mask, self.max_seq_length, self.strategy),
                )
            )
        width = max((len(ids) for ids, _ in cut), default=0)
        return [
            Window(
                ids=self._pad(ids, self.pad_id, width),
                type_ids=self._pad(type_ids, self.pad_type_id, width),
                attention_mask=self._pad([1] * len(ids), 0, width),
            )
            for ids, type_ids in cut
        ]

    def _pad(self, values: list[int], fill: int, width: int) -> list[int]:
        padding = [fill] * (width - len(values))
        return padding + values if self.pad_left else values + padding
