"""`make mutation`'s verdict: the share of the mutants in scope that the unit tests killed.

Reads what `mutmut results --all true` prints (one `name: status` line per mutant) and keeps
the mutants whose names match a scope pattern (fnmatch, as `mutmut run` takes them). A mutant
counts as caught when a test failed on it or it ran out of time; one no test ran counts
against the score, as do survivors. Prints the survivors and the score, and exits 1 below the
minimum, or when a pattern matches no mutant (a function renamed since the scope was written).

    python tests/mutation_score.py RESULTS MINIMUM PATTERN...
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections import Counter
from pathlib import Path

CAUGHT = frozenset({"killed", "timeout"})


def read_results(text: str) -> dict[str, str]:
    """Mutant name to status, from `mutmut results` output."""
    results: dict[str, str] = {}
    for line in text.splitlines():
        name, separator, status = line.strip().rpartition(": ")
        if separator and "__mutmut_" in name:
            results[name] = status
    return results


def in_scope(results: dict[str, str], patterns: list[str]) -> tuple[dict[str, str], list[str]]:
    """The results of the mutants some pattern matches, and the patterns matching none."""
    matched = {p: [n for n in results if fnmatch.fnmatchcase(n, p)] for p in patterns}
    scoped = {name: results[name] for names in matched.values() for name in names}
    return scoped, [p for p, names in matched.items() if not names]


def mutation_score(statuses: Counter[str]) -> float:
    """Per cent of the mutants, skipped ones aside, that a test caught."""
    tested = sum(statuses.values()) - statuses["skipped"]
    if tested <= 0:
        raise ValueError("no mutants in scope were tested")
    return 100.0 * sum(statuses[s] for s in CAUGHT) / tested


def main(argv: list[str] | None = None) -> int:
    """Print the survivors, the score and the counts behind it; 1 if it does not pass."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the output of `mutmut results --all true`")
    parser.add_argument("minimum", type=float, help="the lowest passing score, in per cent")
    parser.add_argument("patterns", nargs="+", help="the mutants in scope, as fnmatch patterns")
    args = parser.parse_args(argv)
    scoped, unmatched = in_scope(read_results(args.results.read_text("utf-8")), args.patterns)
    for pattern in unmatched:
        print(f"no mutant matches {pattern!r}: has the function been renamed?")
    for name, status in sorted(scoped.items()):
        if status not in CAUGHT:
            print(f"    {name}: {status}")
    statuses = Counter(scoped.values())
    score = mutation_score(statuses)
    passed = score >= args.minimum and not unmatched
    print(
        f"mutation score {score:.1f}% {'passes' if passed else 'FAILS'} "
        f"(minimum {args.minimum:g}%): "
        + ", ".join(f"{count} {status}" for status, count in statuses.most_common())
        + f", of {len(scoped)} mutants in scope"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
