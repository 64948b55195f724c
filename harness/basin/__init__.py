"""Basin-volume engine (the tyche estimator, made fast): directions, multiplier search, estimates.

Entry points: :func:`estimate_basin` (one model, KL averaged over the evaluation set) and
:func:`per_example_basin` (one multiplier per (direction, example), KL on that example).
Building blocks: :func:`find_multipliers` (safeguarded log-log root finder on any KL
callable), :func:`log_gaussian_integral`, :class:`CausalLMKL`, :class:`HookedPerturbation`,
:class:`SeededDirections` (random directions generated from a seed in fixed RNG blocks, never
held as an ``(n_dirs, D)`` array; :func:`sample_directions` is their dense form for small D).
Guarantees: memory for directions is a small multiple of the perturbed block's size, whatever
the number of directions; a direction is the same for every chunk size and device; the
perturbed parameters are bitwise restored after every call, also when it raises.
The method: "Estimating the Probability of Sampling a Trained Neural Network at Random"
(arXiv 2501.18812) and its ``tyche`` library; docs/benchmarks.md ("The basin-volume engine")
has the benchmark against a plain reference.
"""

from harness.basin.directions import SeededDirections, SubsetDirections, prior_terms, sample_directions
from harness.basin.estimate import (
    BasinResult,
    gaussian_log_estimates,
    log_gaussian_integral,
    log_unit_ball_volume,
    logmeanexp,
    simple_log_estimates,
)
from harness.basin.hooked import HookedPerturbation
from harness.basin.kl import CausalLMKL
from harness.basin.perturb import ParameterSubset, perturbed_weights, select_parameters
from harness.basin.search import SearchResult, estimate_basin, find_multipliers, per_example_basin

__all__ = [
    "BasinResult",
    "CausalLMKL",
    "HookedPerturbation",
    "ParameterSubset",
    "SearchResult",
    "SeededDirections",
    "SubsetDirections",
    "estimate_basin",
    "find_multipliers",
    "gaussian_log_estimates",
    "log_gaussian_integral",
    "log_unit_ball_volume",
    "logmeanexp",
    "per_example_basin",
    "perturbed_weights",
    "prior_terms",
    "sample_directions",
    "select_parameters",
    "simple_log_estimates",
]
