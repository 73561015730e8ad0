"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one number T that
divides the logits, fitted after training on the validation split to minimise its negative log-likelihood.

Dividing every logit by the same T > 0 never changes which class is on top, so accuracy is unchanged; only the
confidence moves (T > 1 softens an over-confident model, T < 1 sharpens an under-confident one). It is fitted
from probabilities because log p = logits - logsumexp(logits) and the constant cancels in the softmax:
softmax(log p / T) = softmax(logits / T).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

__all__ = ["MIN_IMAGES", "PRIOR_SD", "fit_temperature", "rescale"]

MIN_IMAGES = 20  # fewer validation images than this: keep T = 1 (a fit on a handful of images is noise)
PRIOR_SD = 0.3  # of log T: T within a factor of 1.8 of 1 at two standard deviations
_LOG_BOUNDS = (math.log(0.05), math.log(20.0))


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))


def rescale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities the same logits give at `temperature` relative to the one `probs` were made at."""
    return np.exp(log_softmax(_log_probs(probs) / temperature, axis=1))


def fit_temperature(probs: np.ndarray, labels: np.ndarray, prior_sd: float = PRIOR_SD) -> float:
    """The T > 0 (between 0.05 and 20) that minimises the negative log-likelihood of `labels` under
    softmax(log probs / T) plus the prior's (log T)^2 / (2 prior_sd^2); 1.0 when there are too few images to fit
    it. `prior_sd=inf` is the plain maximum-likelihood fit of Guo et al."""
    if len(labels) < MIN_IMAGES:
        return 1.0
    log_p = _log_probs(probs)
    rows = np.arange(len(labels))

    def objective(log_t: float) -> float:
        nll = -np.sum(log_softmax(log_p / math.exp(log_t), axis=1)[rows, labels])
        return float(nll + log_t * log_t / (2 * prior_sd * prior_sd))

    best = minimize_scalar(objective, bounds=_LOG_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(math.exp(best.x)) if objective(best.x) < objective(0.0) else 1.0
