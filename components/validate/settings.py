"""What the validate step holds labelled data to: the thresholds of its checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from textops.components.common.errors import ConfigError
from textops.components.common.labels import canonical_label


@dataclass(frozen=True)
class ValidationSettings:
    """Thresholds of the data checks; the defaults are `TrainingConfig`'s.

    Attributes:
        allowed_labels: Labels the data may hold; empty allows any.
        min_rows: Fewest rows the data may have.
        min_text_chars: Shortest text, in characters, that counts as valid.
        max_text_chars: Longest text, in characters, that counts as valid.
        text_mostly: Share of rows whose text must be valid (present, not blank, within the
            length bounds). Invalid rows within this allowance are dropped.
        max_duplicate_share: Largest share of rows that may repeat an earlier row's text.
        max_conflicting_label_share: Largest share of rows whose text also appears with
            another label.
        min_class_share: Smallest share of the labelled rows the rarest class may have.
        redact_pii: Replace e-mail addresses, phone numbers, card numbers and IBANs in the
            text before any check, report or output sees it.
    """

    allowed_labels: tuple[str, ...] = ()
    min_rows: int = 50
    min_text_chars: int = 1
    max_text_chars: int = 10_000
    text_mostly: float = 0.99
    max_duplicate_share: float = 0.05
    max_conflicting_label_share: float = 0.0
    min_class_share: float = 0.01
    redact_pii: bool = False

    def __post_init__(self) -> None:
        # The pipeline's values come through TrainingConfig, which checks them too; a caller
        # of validate_file gets the same refusals.
        problems = []
        if self.min_rows < 1:
            problems.append(f"min_rows must be at least 1, got {self.min_rows}")
        if self.min_text_chars < 0:
            problems.append(f"min_text_chars must not be negative, got {self.min_text_chars}")
        if self.max_text_chars < max(self.min_text_chars, 1):
            problems.append(
                f"max_text_chars ({self.max_text_chars}) must be at least 1 and at least "
                f"min_text_chars ({self.min_text_chars})"
            )
        if not 0 < self.text_mostly <= 1:
            problems.append(f"text_mostly must be in (0, 1], got {self.text_mostly}")
        for name in ("max_duplicate_share", "max_conflicting_label_share"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                problems.append(f"{name} must be in [0, 1], got {value}")
        if not 0 <= self.min_class_share < 1:
            problems.append(f"min_class_share must be in [0, 1), got {self.min_class_share}")
        if problems:
            raise ConfigError("invalid validation settings: " + "; ".join(problems))

    @property
    def canonical_allowed_labels(self) -> tuple[str, ...]:
        """The allowed labels in the form the data's labels are compared in ("1.0" stays)."""
        return tuple(dict.fromkeys(canonical_label(label) for label in self.allowed_labels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values, for the validation result."""
        values = asdict(self)
        values["allowed_labels"] = list(self.allowed_labels)
        return values
