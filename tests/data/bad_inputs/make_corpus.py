"""Write the corpus of bad inputs that `tests/data/test_bad_inputs.py` validates.

Run from the repository root to regenerate the files beside this script:

    .venv/bin/python tests/data/bad_inputs/make_corpus.py

Every file is small and made deterministically; the two with 100 kB texts are gzip-compressed
(repetitive text shrinks a thousandfold), which also exercises compressed input.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADJECTIVES = ("great", "awful", "fine", "broken", "lovely", "noisy", "cheap", "solid")
NOUNS = ("phone", "case", "charger", "screen", "battery", "cable", "speaker", "headset")
#: A text of about 100 kB: a pasted log, a whole document in one cell.
LONG_TEXT = "This review goes on and on. " * 3_600


def sentence(i: int) -> str:
    """The i-th of 64 distinct short review sentences."""
    return f"The {ADJECTIVES[i % 8]} {NOUNS[i // 8 % 8]} number {i}."


def csv_rows(rows: list[tuple[str, str]], header: str = "text,label", sep: str = ",") -> str:
    def field(value: str) -> str:
        if any(c in value for c in (sep, '"', "\n", "\r")):
            return '"' + value.replace('"', '""') + '"'
        return value

    return header + "\n" + "".join(f"{field(t)}{sep}{field(lbl)}\n" for t, lbl in rows)


def balanced(n: int, labels: tuple[str, ...] = ("positive", "negative")) -> list[tuple[str, str]]:
    return [(sentence(i), labels[i % len(labels)]) for i in range(n)]


def corpus() -> dict[str, bytes]:
    """File name -> content of every file in the corpus."""
    files: dict[str, str | bytes] = {
        "empty.csv": b"",
        "header_only.csv": "text,label\n",
        "wrong_delimiter.csv": csv_rows(balanced(20), header="text;label", sep=";"),
        "missing_column.csv": csv_rows(balanced(20), header="text,category"),
        "all_null_text.csv": csv_rows([("", lbl) for _, lbl in balanced(20)]),
        "non_utf8.csv": csv_rows([*balanced(20), ("Un café crème, très bon.", "positive")])
        .encode("utf-8")
        .replace("é".encode(), b"\xe9")  # the same text as Latin-1 would store it
        .replace("è".encode(), b"\xe8"),
        "utf16.csv": csv_rows(balanced(20)).encode("utf-16"),
        "one_class.csv": csv_rows([(t, "positive") for t, _ in balanced(20)]),
        "unseen_labels.csv": csv_rows(balanced(21, ("positive", "negative", "neutral"))),
        "numeric_labels.csv": csv_rows(balanced(30, ("1", "0", "1.0"))),
        "conflicting_duplicates.csv": csv_rows(
            [*balanced(20), (sentence(3), "positive"), (sentence(5), "positive")]
        ),
        "blank_texts.jsonl": "".join(
            f'{{"text": "{t}", "label": "{lbl}"}}\n'
            for t, lbl in [
                *balanced(17),
                ("", "positive"),
                ("   ", "negative"),
                ("\\u00a0\\t", "positive"),
            ]
        ),
        "null_labels.csv": csv_rows([*balanced(19), (sentence(40), "")]),
        "rare_class.csv": csv_rows([*balanced(199), (sentence(63) + " Odd one.", "neutral")]),
        "new_label_for_production.csv": csv_rows(balanced(30, ("positive", "negative", "mixed"))),
        "bom_quotes_newlines.csv": "\ufeff"
        + csv_rows(
            [
                *balanced(18),
                ('She said "never again", and left.', "negative"),
                ("First line.\nSecond line, with a comma.", "positive"),
            ]
        ),
        "long_texts.csv.gz": csv_rows([*balanced(200), (LONG_TEXT, "positive")]),
        "all_long_texts.csv.gz": csv_rows(
            [(f"{LONG_TEXT} {i}", lbl) for i, (_, lbl) in enumerate(balanced(10))]
        ),
    }
    encoded = {name: c.encode("utf-8") if isinstance(c, str) else c for name, c in files.items()}
    return {
        # mtime=0: the same content gives the same bytes on every run.
        name: gzip.compress(content, mtime=0) if name.endswith(".gz") else content
        for name, content in encoded.items()
    }


def main(directory: Path = HERE) -> None:
    for name, content in corpus().items():
        (directory / name).write_bytes(content)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
