"""Temperature scaling: one number that makes the model's confidence mean what it says.

A fine-tuned transformer is usually over-confident: of the answers it gives with 95%
probability, far fewer than 95% are right. Temperature scaling (Guo et al., 2017) divides the
logits by a single T > 0 before the softmax, fitted to minimise the negative log-likelihood
on the validation split, which neither training's weights nor the test scores saw. Dividing
by a positive number keeps every row's order, so the predicted class, and with it accuracy,
cannot change; only the confidence does. The bundle records T and every runtime applies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from textops.components.common.onnx_classifier import softmax
from textops.components.evaluate.scoring import (
    CalibrationBin,
    calibration_bins,
    ece_from_bins,
)

#: The range T is searched in. Below 0.05 or above 20 the logits would be scaled by more than
#: any real model needs, and a fit that hits a bound says the validation split is too small
#: or the model degenerate, not that the bound should move.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
#: Where the fitted T comes from, as the bundle records it.
FITTED_ON = "validation"


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and what it does on the test split.

    Attributes:
        temperature: T; probabilities are softmax(logits / T).
        validation_rows: Rows T was fitted on (0: no validation rows, T is 1).
        ece_before: Expected calibration error on the test split with T = 1.
        ece_after: The same with the fitted T.
        nll_before: Mean negative log-likelihood on the test split with T = 1.
        nll_after: The same with the fitted T.
        bins_before: The test split's reliability bins with T = 1.
        bins_after: The same with the fitted T.
    """

    temperature: float
    validation_rows: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    bins_before: tuple[CalibrationBin, ...]
    bins_after: tuple[CalibrationBin, ...]

    def scalars(self) -> dict[str, float]:
        """The metrics logged beside the model's scores (`ece` is the uncalibrated one)."""
        return {
            "temperature": self.temperature,
            "ece_calibrated": self.ece_after,
            "nll": self.nll_before,
            "nll_calibrated": self.nll_after,
        }

    def record(self) -> dict[str, Any]:
        """What the bundle's metadata.json keeps under `calibration`, and the decision file."""
        return {
            "temperature": self.temperature,
            "fitted_on": FITTED_ON,
            "validation_rows": self.validation_rows,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
        }


def negative_log_likelihood(
    logits: np.ndarray, y_true: Sequence[int] | np.ndarray, temperature: float = 1.0
) -> float:
    """Mean -log p(true class) of softmax(logits / temperature), computed in float64.

    Args:
        logits: Array (rows, classes).
        y_true: True class ids.
        temperature: T > 0.

    Raises:
        ValueError: No rows, or the shapes disagree.
    """
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(y_true, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need one true id per row of logits, got {z.shape} and {len(y)} ids")
    top = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(
    logits: np.ndarray,
    y_true: Sequence[int] | np.ndarray,
    *,
    bounds: tuple[float, float] = (MIN_TEMPERATURE, MAX_TEMPERATURE),
) -> float:
    """The T in `bounds` that minimises the negative log-likelihood of `y_true`.

    The search runs over log T (bounded Brent), where the loss is smooth and a factor of two
    either way weighs the same; one scalar needs no gradient.

    Args:
        logits: Validation logits, array (rows, classes).
        y_true: Their true class ids.
        bounds: Lowest and highest T allowed.

    Returns:
        T; 1.0 when there are no rows to fit on.
    """
    from scipy.optimize import minimize_scalar

    if len(y_true) == 0:
        return 1.0
    low, high = (math.log(b) for b in bounds)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, y_true, math.exp(log_t)),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(result.x))


def calibrate(
    validation_logits: np.ndarray,
    validation_true: Sequence[int] | np.ndarray,
    test_logits: np.ndarray,
    test_true: Sequence[int] | np.ndarray,
) -> Calibration:
    """Fit T on the validation split and measure ECE and NLL on the test split before and after.

    Args:
        validation_logits: The challenger's logits on the validation split.
        validation_true: Its true class ids.
        test_logits: The challenger's logits on the test split.
        test_true: Its true class ids.
    """
    temperature = fit_temperature(validation_logits, validation_true)
    before = calibration_bins(test_true, softmax(test_logits))
    after = calibration_bins(test_true, softmax(test_logits, temperature))
    return Calibration(
        temperature=temperature,
        validation_rows=len(validation_true),
        ece_before=ece_from_bins(before),
        ece_after=ece_from_bins(after),
        nll_before=negative_log_likelihood(test_logits, test_true),
        nll_after=negative_log_likelihood(test_logits, test_true, temperature),
        bins_before=before,
        bins_after=after,
    )
