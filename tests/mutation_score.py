"""`make mutation`'s verdict: the share of mutants the unit tests killed, against a minimum.

Reads the counts `mutmut export-cicd-stats` writes and scores them as mutmut's own badge does:
killed and timed-out mutants over all mutants but the skipped ones, so a mutant no test runs
counts against the score. Exits 1 below the minimum.

    python tests/mutation_score.py .mutation/mutants/mutmut-cicd-stats.json 90
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def mutation_score(stats: dict[str, int]) -> float:
    """Per cent of the tested mutants that a test caught (failed, or ran out of time)."""
    tested = stats["total"] - stats["skipped"]
    if tested <= 0:
        raise ValueError("no mutants were tested: check [tool.mutmut] only_mutate")
    return 100.0 * (stats["killed"] + stats["timeout"]) / tested


def main(argv: list[str] | None = None) -> int:
    """Print the score and the counts behind it; 1 if the score is below the minimum."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stats", type=Path, help="mutmut-cicd-stats.json")
    parser.add_argument("minimum", type=float, help="the lowest passing score, in per cent")
    args = parser.parse_args(argv)
    stats = json.loads(args.stats.read_text(encoding="utf-8"))
    score = mutation_score(stats)
    verdict = "passes" if score >= args.minimum else "FAILS"
    print(
        f"mutation score {score:.1f}% {verdict} (minimum {args.minimum:g}%): "
        f"{stats['killed']} killed, {stats['timeout']} timed out, {stats['survived']} survived, "
        f"{stats['no_tests']} run by no test, {stats['suspicious']} suspicious, "
        f"of {stats['total']} mutants"
    )
    return 0 if score >= args.minimum else 1


if __name__ == "__main__":
    sys.exit(main())
