"""Benchmark of the predictor's text checks: what refusing bad texts costs a good request.

    make bench BENCH=request_checks      # writes bench-results/request_checks.json

Every text of a request is checked before the model sees it (`payloads.checked_text`): a
lone surrogate and a text with nothing to classify are refused with 400. This measures
`parse_request` on requests of several shapes, in one process:

- `checked`: `parse_request` as the predictor runs it (texts cut to 2,048 characters, the
  default for a 128-token model, then checked);
- `unchecked`, the baseline: the same parse with the checks left out;
- `tokenize`: what the predictor does next with the same texts, the base model's tokenizer
  (`tokenizers`, truncation at 128 tokens), one batch.

The figure is the checks' cost (checked - unchecked) as a share of tokenizing the same texts,
each timing the best of 7 repeats. Target: at most 5% for ordinary texts, ASCII or not. The
last shape, texts of 2,047 NULs and a letter, is the most a check can be made to cost (a
control-character prefix is scanned character by character); it is reported with no target.
The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import describe_machine

from textops.components.common.config import resolve_base_model
from textops.components.common.onnx_classifier import load_tokenizer
from textops.components.common.settings import DEFAULT_BASE_MODEL
from textops.components.serve import payloads

MAX_SEQ_LENGTH = 128
#: What the predictor cuts each text to for a 128-token model (--max-chars-per-token 16).
MAX_CHARS = 2048
MAX_BATCH_SIZE = 256
TARGET_SHARE_OF_TOKENIZING = 0.05
REPEATS = 7
#: Request shapes: name -> (texts, whether the 5% target applies).
SHAPES: dict[str, tuple[list[str], bool]] = {
    "8 texts of 120 characters": (["the food was great and the service quick " * 3] * 8, True),
    "256 texts of 2,048 ASCII characters": (["word " * 409 + "end"] * 256, True),
    "256 texts of 2,048 non-ASCII characters": (["héllo wörld " * 170 + "ende"] * 256, True),
    "256 texts of 2,047 NULs and a letter": (["\x00" * 2047 + "a"] * 256, False),
}


def best_seconds(call: Callable[[], object], number: int) -> float:
    """The best of `REPEATS` timings of `number` calls, per call."""
    return min(timeit.repeat(call, number=number, repeat=REPEATS)) / number


def measure(texts: list[str], tokenize: Callable[[list[str]], object]) -> dict[str, float]:
    """Seconds per request: checked, unchecked and tokenized."""
    request = {"instances": texts}
    number = max(5, 2000 // len(texts))

    def parse() -> object:
        return payloads.parse_request(request, {}, MAX_BATCH_SIZE, MAX_CHARS)

    checked = best_seconds(parse, number)
    check = payloads.checked_text
    payloads.checked_text = lambda text, where: text  # type: ignore[assignment]
    try:
        unchecked = best_seconds(parse, number)
    finally:
        payloads.checked_text = check
    cut = [text[:MAX_CHARS] for text in texts]
    tokenized = best_seconds(lambda: tokenize(cut), max(1, number // 10))
    return {"checked_s": checked, "unchecked_s": unchecked, "tokenize_s": tokenized}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="where the JSON figures go")
    args = parser.parse_args(argv)

    tokenizer_file = Path(resolve_base_model(DEFAULT_BASE_MODEL)) / "tokenizer.json"
    tokenizer = load_tokenizer(tokenizer_file, MAX_SEQ_LENGTH)
    shapes: dict[str, Any] = {}
    met = True
    for name, (texts, has_target) in SHAPES.items():
        figures = measure(texts, tokenizer.encode_batch)
        share = (figures["checked_s"] - figures["unchecked_s"]) / figures["tokenize_s"]
        passed = share <= TARGET_SHARE_OF_TOKENIZING if has_target else None
        met = met and passed is not False
        shapes[name] = {
            **figures,
            "checks_share_of_tokenizing": share,
            "target": TARGET_SHARE_OF_TOKENIZING if has_target else None,
            "pass": passed,
        }
        print(
            f"{name}: checked {figures['checked_s'] * 1e6:.1f} us, unchecked "
            f"{figures['unchecked_s'] * 1e6:.1f} us, tokenize {figures['tokenize_s'] * 1e6:.0f} "
            f"us: the checks cost {share:.1%} of tokenizing"
            + ("" if passed is None else f" (target <= {TARGET_SHARE_OF_TOKENIZING:.0%})")
        )
    report = {
        "benchmark": "request_checks",
        "machine": describe_machine(["tokenizers", "kserve"]),
        "max_chars": MAX_CHARS,
        "max_seq_length": MAX_SEQ_LENGTH,
        "shapes": shapes,
        "pass": met,
    }
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
