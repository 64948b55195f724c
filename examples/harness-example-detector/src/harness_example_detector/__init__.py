"""An example detector-harness plugin: the ``logodds_zscore`` MAD detector.

Copy this package to start your own plugin: rename the package and the entry point in
``pyproject.toml``, replace the detector, keep the ``register_detectors`` hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.api import ConfigError, Detector, TextItems, hookimpl

__version__ = "0.1.0"


@dataclass
class LogoddsZScore(Detector):
    """Distance of the answer log-odds from the trusted ones, in trusted standard deviations.

    fit: mean and standard deviation of the trusted items' answer log-odds (logit of the
    positive answer minus logit of the negative one, at the answer position). score:
    |logodds - mean| / max(std, min_std), (n_items,) float, in units of trusted standard
    deviations. Higher = more anomalous. A one-number baseline: it sees only the model's
    output, not its internals, so it flags inputs on which the model is unusually confident
    or unusually unsure compared with trusted inputs.

    Hyperparameters:
        min_std: floor on the trusted standard deviation (log-odds units), so a constant
            trusted set does not divide by zero (default 1e-6).
    """

    name = "logodds_zscore"
    accepts = (TextItems,)
    min_std: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.min_std, (int, float)) or not self.min_std > 0:
            raise ConfigError(f"{self.name}: field 'min_std' must be a positive number, got {self.min_std!r}")

    def fit(self, trusted: TextItems) -> "LogoddsZScore":
        logodds = np.asarray(trusted.logodds(), dtype=np.float64)
        if logodds.ndim != 1 or len(logodds) < 2:
            raise ValueError(f"{self.name}: fit needs at least 2 trusted items, got {len(logodds)}")
        self.mean_ = float(logodds.mean())
        self.std_ = float(max(logodds.std(), self.min_std))
        return self

    def score(self, items: TextItems) -> np.ndarray:
        self._check_is_fitted("mean_")
        logodds = np.asarray(items.logodds(), dtype=np.float64)
        return np.abs(logodds - self.mean_) / self.std_

    def diagnostics(self) -> dict:
        return {"trusted_logodds_mean": self.mean_, "trusted_logodds_std": self.std_}


@hookimpl
def register_detectors(register) -> None:
    """The plugin's one hook: hand each detector class to the harness."""
    register(LogoddsZScore)
