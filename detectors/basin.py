"""Basin-volume detectors for MAD: ``basin_volume`` (per-datapoint "meta basin volume") and
``basin_mahalanobis`` (Mahalanobis over per-datapoint log multipliers).

Both perturb the model's weights along K fixed random unit directions and find, for every
datapoint and direction, the multiplier at which the KL between the perturbed and the
unperturbed next-token distribution at the answer position reaches the cutoff ``eps`` on
that datapoint alone (:func:`harness.basin.per_example_basin`, all root finds in lock-step).
The sweeps are cached on disk under (model fingerprint, prompts, settings).

Convergence: a datapoint counts as converged when the search of every direction reached
``|KL/eps - 1| <= rtol``; otherwise its multipliers are the best points its searches saw, not
roots, and its score is no basin estimate: ``score`` masks it out (``Scores.mask``), so the
metrics leave it out and count it. ``diagnostics()`` reports, per scored item, whether it
converged and how many KL evaluations its searches took (``converged``, ``evaluations``).
basin_mahalanobis also fits its trusted statistics on converged trusted datapoints only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
from tqdm.auto import tqdm

from harness.api import ConfigError, Detector, ModelItem, ModelItems, Scores, TextItems, resolve_layer
from harness.cache import cached_arrays, stable_hash
from harness.runtime import current, with_batch_backoff

from .statistics import COVARIANCE_ESTIMATORS, Mahalanobis

# part of every basin sweep's cache key: bump it when a change to harness/basin changes its numbers
ENGINE_VERSION = "6"


class _PerExampleBasin(Detector):
    """Shared settings and the cached per-example sweep (subclasses are the dataclasses)."""

    accepts = (TextItems,)
    n_directions: int = 25
    eps: float = 1e-2
    layer: Optional[Union[int, str]] = None
    rtol: float = 1e-2
    seed: int = 0

    def _validate(self) -> None:
        if not isinstance(self.n_directions, int) or self.n_directions < 1:
            raise ConfigError(f"{self.name}: field 'n_directions' must be a positive integer, got {self.n_directions!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise ConfigError(f"{self.name}: field 'eps' must be a positive KL cutoff in nats, got {self.eps!r}")
        if not (isinstance(self.rtol, (int, float)) and 0 < self.rtol < 1):
            raise ConfigError(f"{self.name}: field 'rtol' must be in (0, 1), got {self.rtol!r}")

    def check_layers(self, n_layers: int) -> None:
        self.engine_layer(n_layers)

    def check_episode(self, episode: Any) -> None:
        """A module name (``layer``) the episode's model(s) do not have is a ConfigError, before
        any job runs."""
        from harness.basin.perturb import select_parameters

        if not isinstance(self.layer, str):
            return
        items = [episode.trusted] if episode.trusted is not None else list(episode.test)
        for item in items:
            try:
                select_parameters(item.handle.model, self.layer)
            except (IndexError, ValueError) as exc:
                raise ConfigError(f"detector {self.name!r} field 'layer': {exc}") from None

    def engine_layer(self, n_layers: int) -> Optional[Union[int, str]]:
        """``layer`` as the engine takes it: an index L (harness.layers: the block whose output
        is hidden state L, 1..n_layers or negative) becomes the 0-based block L - 1; a module
        name or null passes through."""
        if isinstance(self.layer, int) and not isinstance(self.layer, bool):
            return resolve_layer(self.layer, n_layers, f"detector {self.name!r}", block=True) - 1
        return self.layer

    def _sweep_key(self, fingerprint: str, prompts: list[str], **extra: str) -> dict:
        """Cache key of a sweep: everything that changes its numbers."""
        return {"engine": ENGINE_VERSION, "model": fingerprint, "prompts": stable_hash(prompts, 32),
                "n_directions": self.n_directions, "eps": self.eps, "layer": self.layer, "rtol": self.rtol,
                "seed": self.seed, **extra}

    def sweep(self, items: TextItems) -> dict[str, np.ndarray]:
        """Per-example basin arrays for ``items``: ``log_multipliers`` (n_directions, n),
        ``estimates`` (n_directions, n), ``log_volume`` (n,), ``converged`` (n_directions, n),
        ``evaluations`` (n_directions, n) KL evaluations per search."""
        key = self._sweep_key(items.handle.fingerprint, list(items.prompts))
        return cached_arrays("basin", key, lambda: self._compute(items))

    def _record_convergence(self, sweep: dict[str, np.ndarray]) -> None:
        """Keep the per-item convergence facts of the scored items for :meth:`diagnostics`."""
        converged = sweep["converged"].astype(bool)
        self.converged_ = converged.all(axis=0)
        self.evaluations_ = sweep["evaluations"].sum(axis=0).astype(np.int64)
        self.unconverged_searches_ = int((~converged).sum())

    def convergence_diagnostics(self) -> dict[str, Any]:
        """``converged`` (per scored item: every direction's search converged), ``evaluations``
        (per item, summed over directions), their counts; empty before ``score``."""
        if not hasattr(self, "converged_"):
            return {}
        return {
            "converged": self.converged_.tolist(),
            "evaluations": self.evaluations_.tolist(),
            "n_unconverged_items": int((~self.converged_).sum()),
            "n_unconverged_searches": self.unconverged_searches_,
            "n_directions": self.n_directions,
        }

    def model_sweep(self, item: ModelItem) -> dict[str, np.ndarray]:
        """Per-model basin of ``item``'s model on the first ``n_prompts`` clean benchmark prompts
        (KL of the next-token distribution at the answer position, averaged over prompts):
        ``log_volume`` (1,), ``radii``, ``kls``, ``estimates`` (n_directions,)."""
        prompts = list(item.prompts)[: self.n_prompts]
        key = self._sweep_key(item.handle.fingerprint, prompts, kind="per_model")

        def compute() -> dict[str, np.ndarray]:
            from harness.basin import estimate_basin

            result = self._run_engine(estimate_basin, item.handle, prompts, "per-model basin")
            return {"log_volume": np.array([result.log_volume]), "radii": np.asarray(result.radii, np.float64),
                    "kls": np.asarray(result.kls, np.float64), "estimates": np.asarray(result.estimates, np.float64)}

        return cached_arrays("basin", key, compute)

    def _run_engine(self, engine: Callable[..., Any], handle: Any, prompts: list[str], what: str) -> Any:
        """``engine`` (``estimate_basin`` or ``per_example_basin``) on ``prompts`` with this
        detector's settings, at the run's batch size (halved on out-of-memory under
        ``--batch-size auto``)."""
        from harness.zoo.tokenizer import encode_batch

        batch = encode_batch(handle.tokenizer, prompts)
        settings = dict(n_directions=self.n_directions, eps=self.eps, layer=self.engine_layer(handle.n_layers),
                        seed=self.seed, rtol=self.rtol)
        runtime = current()
        return with_batch_backoff(
            lambda size: engine(handle.model, batch["input_ids"], batch["attention_mask"], batch_size=size, **settings),
            runtime.initial_batch_size(), f"{self.name} ({what})", auto=runtime.batch_size == "auto")

    def _compute(self, items: TextItems) -> dict[str, np.ndarray]:
        from harness.basin import per_example_basin

        result = self._run_engine(per_example_basin, items.handle, list(items.prompts), "per-example basin")
        return {
            "log_multipliers": np.log(result.multipliers).astype(np.float64),
            "estimates": np.asarray(result.estimates, dtype=np.float64),
            "log_volume": np.asarray(result.log_volume, dtype=np.float64),
            "converged": np.asarray(result.converged, dtype=np.uint8),
            "evaluations": np.asarray(result.evaluations, dtype=np.int64),
        }


@dataclass
class BasinVolume(_PerExampleBasin):
    """Basin volume (the tyche estimate): score = minus the log basin probability; smaller basin = more suspicious.

    The tyche estimate (Gaussian prior with sigma = RMS of the weights) of the weight-space
    basin within which the KL stays below eps, aggregated by log-mean-exp over directions.
    MAD ("meta basin volume"): per datapoint, with the KL measured on that datapoint alone.
    POSER: per model, with the KL of the answer-position distribution averaged over the first
    n_prompts clean benchmark prompts (the same for every pair the model is in). Score = -log_volume:
    higher = more anomalous (MAD) / more suspicious (POSER). Nothing is learned from trusted data.

    Hyperparameters:
        n_directions: random unit directions (default 25).
        eps: KL cutoff in nats (default 1e-2).
        layer: null = all parameters; an int L = the parameters of the block whose output is
            hidden state L (1..n_layers, negative from the end; harness.layers); a module name.
        rtol: relative tolerance of the root finder on KL/eps (default 1e-2, as tyche).
        seed: seed of the directions (default 0).
        n_prompts: POSER only: clean prompts the per-model KL is averaged over (default 64).
    """

    name = "basin_volume"
    accepts = (TextItems, ModelItems)
    n_directions: int = 25
    eps: float = 1e-2
    layer: Optional[Union[int, str]] = None
    rtol: float = 1e-2
    seed: int = 0
    n_prompts: int = 64

    def __post_init__(self) -> None:
        self._validate()

    def fit(self, trusted: Optional[TextItems] = None) -> "BasinVolume":
        self.fitted_ = True
        return self

    def score(self, items) -> "Scores | np.ndarray":
        """-log basin volume per datapoint (texts: Scores, unconverged items masked out) or per
        model (an (n_models,) float array)."""
        self._check_is_fitted("fitted_")
        if isinstance(items, TextItems):
            sweep = self.sweep(items)
            self._record_convergence(sweep)
            return Scores(-sweep["log_volume"], mask=self.converged_)
        sweeps = [self.model_sweep(item) for item in tqdm(items, desc="basin volume per model", unit="model", leave=False)]
        self.radii_ = [sweep["radii"].tolist() for sweep in sweeps]
        return np.array([-sweep["log_volume"][0] for sweep in sweeps])

    def diagnostics(self) -> dict:
        """MAD: per-item convergence (see the module docstring). POSER: per-model radii at the
        KL cutoff, in item order (for the radii plot)."""
        if hasattr(self, "converged_"):
            return {**self.convergence_diagnostics(), "eps": self.eps}
        return {"radii": getattr(self, "radii_", []), "eps": self.eps}


@dataclass
class BasinMahalanobis(_PerExampleBasin):
    """Mahalanobis distance of per-datapoint log multipliers from the trusted data's.

    Fix K random unit directions; for every datapoint the vector of log m_k, where m_k is the
    multiplier along direction k at which the KL on that datapoint reaches eps. Fit mean and
    covariance on trusted datapoints; score = squared Mahalanobis distance / K. Higher = more
    anomalous.

    Hyperparameters:
        n_directions: K, random unit directions (default 25).
        eps: KL cutoff in nats (default 1e-2).
        layer: null = all parameters; an int L = the parameters of the block whose output is
            hidden state L (1..n_layers, negative from the end; harness.layers); a module name.
        rtol: root-finder tolerance (default 1e-2).
        seed: seed of the directions (default 0).
        covariance: "ledoit_wolf" (default) or "pinv".
    """

    name = "basin_mahalanobis"
    n_directions: int = 25
    eps: float = 1e-2
    layer: Optional[Union[int, str]] = None
    rtol: float = 1e-2
    seed: int = 0
    covariance: str = "ledoit_wolf"

    def __post_init__(self) -> None:
        self._validate()
        if self.covariance not in COVARIANCE_ESTIMATORS:
            raise ConfigError(f"{self.name}: field 'covariance' must be one of {COVARIANCE_ESTIMATORS}, got {self.covariance!r}")

    def features(self, items: TextItems) -> np.ndarray:
        """(n_items, n_directions) log multipliers."""
        return self.sweep(items)["log_multipliers"].T

    def fit(self, trusted: TextItems) -> "BasinMahalanobis":
        sweep = self.sweep(trusted)
        converged = sweep["converged"].astype(bool).all(axis=0)
        if converged.sum() < 2:
            raise ValueError(f"{self.name}: only {int(converged.sum())} of {len(converged)} trusted datapoints converged")
        self.n_trusted_unconverged_ = int((~converged).sum())
        self.scorer_ = Mahalanobis(self.covariance).fit(sweep["log_multipliers"].T[converged])
        return self

    def score(self, items: TextItems) -> Scores:
        """(n_items,) float, higher = more anomalous; unconverged items masked out."""
        self._check_is_fitted("scorer_")
        sweep = self.sweep(items)
        self._record_convergence(sweep)
        return Scores(self.scorer_.score(sweep["log_multipliers"].T), mask=self.converged_)

    def diagnostics(self) -> dict:
        """Per-item convergence of the scored items (module docstring) and the number of
        unconverged trusted datapoints left out of the fit."""
        out = self.convergence_diagnostics()
        if hasattr(self, "n_trusted_unconverged_"):
            out["n_trusted_unconverged"] = self.n_trusted_unconverged_
        return out
