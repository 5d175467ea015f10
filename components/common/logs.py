"""Logging for step processes: one line per event, `key=value` fields in the message."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    """Send textops log lines to stderr at `level` (default: $TEXTOPS_LOG_LEVEL or INFO)."""
    chosen = (level or os.environ.get("TEXTOPS_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=False,
    )
    logging.getLogger("textops").setLevel(chosen)
