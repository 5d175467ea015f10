"""`textops collect` (the payload collector) and `textops labels` (load ground truth).

Only light imports here: the collector's HTTP stack loads when the command runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from textops.components.common.traffic import DEFAULT_MAX_BODY_BYTES

#: Environment variable that gives the store URL when --store is not given (the Kubernetes
#: manifests set it from a Secret).
STORE_URL_ENV = "TEXTOPS_STORE_URL"
#: Store used when neither --store nor the environment names one: SQLite under ./.textops.
DEFAULT_STORE_URL = "sqlite:///.textops/monitor/payloads.db"
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8088
#: How long a commit waits for more writes once concurrent senders were seen (0: never).
DEFAULT_COMMIT_WINDOW_MS = 0.0


def default_store_url() -> str:
    """$TEXTOPS_STORE_URL, else the local SQLite file."""
    return os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL


def add_store_argument(
    parser: argparse._ActionsContainer,
    purpose: str = "payload store: sqlite:///relative.db, sqlite:////absolute.db or "
    "postgresql://user:password@host:port/db",
) -> None:
    """`--store URL`, the payload store of every command that reads or writes it; unset
    (None), `default_store_url()` applies.

    Args:
        parser: The parser or argument group to add it to.
        purpose: The start of its help, before the default.
    """
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=f"{purpose} (default: ${STORE_URL_ENV}, else {DEFAULT_STORE_URL})",
    )


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    """The collector's flags (shared by `textops collect` and `python -m ...collector`)."""
    add_store_argument(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default: {DEFAULT_HOST}")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT} (0: any free)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help=f"larger request bodies get 413 (default: {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--max-commit-batch",
        type=_positive_int,
        default=None,
        metavar="N",
        help="most queued events one store transaction takes; a smaller N shortens each "
        "commit, and so the wait of the events in it, but costs more transactions (one disk "
        "flush each) under load; 1: one transaction per event, no group commit (default: "
        "the writer's own bound, 2048)",
    )
    parser.add_argument(
        "--commit-window-ms",
        type=_non_negative_float,
        default=DEFAULT_COMMIT_WINDOW_MS,
        metavar="MS",
        help="once the last commit held the writes of several requests, how long the next one "
        "waits for more to join it; fewer, larger commits for many senders of one event each, "
        "at up to MS more latency per event; a lone sender never waits "
        f"(default: {DEFAULT_COMMIT_WINDOW_MS:g}, no waiting)",
    )
    parser.add_argument("--log-level", default=None, help="default: $TEXTOPS_LOG_LEVEL, else INFO")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, not {text!r}")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `collect` and `labels` commands to the `textops` command."""
    collect = commands.add_parser(
        "collect",
        help="run the payload collector (KServe payload-logger CloudEvents -> payload store)",
        description="Receive the CloudEvents of KServe's payload logger (POST /events), "
        "redact personal data and store request, response and later labels (POST /labels) "
        "joined by Ce-Id. GET /healthz, GET /metrics.",
    )
    add_collect_arguments(collect)
    collect.set_defaults(handler=collect_command)

    labels = commands.add_parser(
        "labels",
        help="load ground-truth labels for logged requests into the payload store",
        description="Read a CSV, TSV, JSONL or Parquet file with columns id (the request's "
        "Ce-Id), label and optionally item (the text's index in the request, default 0) and "
        "record the labels in the payload store.",
    )
    add_store_argument(labels)
    labels.add_argument("file", type=Path, help="the label file")
    labels.set_defaults(handler=labels_command)


def collect_command(args: argparse.Namespace) -> int:
    """Run the collector until it is stopped."""
    from textops.components.common.logs import configure_logging
    from textops.components.monitor.collector import serve

    configure_logging(args.log_level)
    serve(
        args.store or default_store_url(),
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        max_commit_batch=args.max_commit_batch,
        commit_window_ms=args.commit_window_ms,
    )
    return 0


def labels_command(args: argparse.Namespace) -> int:
    """Load a label file into the store and say how many labels matched logged texts."""
    from textops.components.monitor.labels import read_label_file
    from textops.components.monitor.store import mask_url, open_store

    url = args.store or default_store_url()
    rows = read_label_file(str(args.file))
    with open_store(url, create=False) as store:
        matched = store.add_labels(rows)
    print(
        f"textops: stored {len(rows)} labels from {args.file} in {mask_url(url)}; "
        f"{matched} match logged texts"
    )
    return 0
