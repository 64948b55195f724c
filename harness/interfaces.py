"""The interfaces plugins implement: Task (models, episodes, metric, report) and Detector (fit, then score).

Detectors follow scikit-learn's conventions: hyperparameters are dataclass fields (the
generated ``__init__`` stores them unchanged, and they go into the result key), learned
state is set in ``fit`` with a trailing underscore, ``fit`` returns ``self``, and
``score`` raises :class:`NotFittedError` with an actionable message when called first.

Score polarity, everywhere: higher = more suspicious (more anomalous, more misaligned).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence

import numpy as np


# task names, task kinds and detector names: what users type on the command line
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class NotFittedError(RuntimeError):
    """A detector's ``score`` was called before ``fit``."""


class ConfigError(ValueError):
    """A user-supplied configuration value is invalid; the message names the field."""


@dataclass(frozen=True)
class Scores:
    """What ``Detector.score`` may return instead of a bare array, when some items cannot be scored.

    Attributes:
        values: (n_items,) float, higher = more suspicious; finite wherever ``mask`` is True.
        mask: (n_items,) bool, True where the detector scored the item (e.g. its estimate
            converged), None = every item. Items outside the mask are left out of the metrics
            and counted; their values are stored as they are (null if not finite).
    """

    values: np.ndarray
    mask: Optional[np.ndarray] = None

    @classmethod
    def of(cls, result: Any, n_items: int) -> "Scores":
        """``result`` (a Scores or an array-like) checked against the contract: shape
        ``(n_items,)``, finite wherever scored, a boolean mask of the same shape. Raises
        ValueError naming the problem."""
        values, mask = (result.values, result.mask) if isinstance(result, Scores) else (result, None)
        values = np.asarray(values, dtype=float)
        if values.shape != (n_items,):
            raise ValueError(f"score() returned shape {values.shape}, expected ({n_items},)")
        mask = np.ones(n_items, dtype=bool) if mask is None else np.asarray(mask)
        if mask.shape != (n_items,) or mask.dtype != bool:
            raise ValueError(f"Scores.mask must be a bool array of shape ({n_items},), got {mask.dtype} {mask.shape}")
        bad = int((~np.isfinite(values[mask])).sum())
        if bad:
            raise ValueError(f"score() returned {bad} non-finite values on scored items (leave them out with "
                             "Scores(values, mask))")
        return cls(values, mask)

    def kept(self) -> np.ndarray:
        """The (n_items,) bool mask, all True when none was given."""
        return np.ones(len(self.values), dtype=bool) if self.mask is None else np.asarray(self.mask, dtype=bool)


class Detector:
    """Base class of detectors. Subclasses are dataclasses whose fields are hyperparameters.

    Class attributes:
        name: the registry name (``--detector NAME``).
        accepts: the item types it can score (e.g. ``(TextItems,)``: inputs of one model;
            ``(ModelItems,)``: models). It runs on every task whose ``items`` is one of them (or a
            subclass), whatever the task's kind.

    Methods:
        fit(trusted) -> self: learn from trusted (normal) items only, never from labels.
        score(items) -> (n_items,) float array or :class:`Scores`, higher = more suspicious.
    """

    name: ClassVar[str] = ""
    accepts: ClassVar[tuple[type, ...]] = ()
    # what one job of this detector needs; the Ray executor requests it ({"cpus": 1, "gpus": 1}
    # for a detector that wants a GPU)
    resources: ClassVar[dict[str, float]] = {"cpus": 1.0, "gpus": 0.0}

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-serialisable dict (the dataclass fields)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def check_layers(self, n_layers: int) -> None:
        """Raise ConfigError if a layer hyperparameter does not exist in a model of ``n_layers``
        blocks. The harness calls it with every model's depth before anything is trained (from
        the recipe) and again when the episodes are built, so a bad layer fails the run in
        seconds. Default: no check."""

    def check_episode(self, episode: "Episode") -> None:
        """Raise ConfigError if the hyperparameters cannot work on ``episode`` in a way the depth
        alone does not tell (e.g. a module name the model does not have). The runner calls it for
        every job before running any, so a bad setting fails the run cleanly instead of writing
        error records. Default: no check."""

    def memory_need(self, episode: "Episode") -> int:
        """Bytes this detector needs on ``episode`` beyond the model's weights and one
        extraction batch (which the runner counts itself), e.g. its fitted statistics; the
        runner compares the total with the device's free memory before the first job. Must
        not load weights (``handle.n_layers``, ``d_model`` and ``n_parameters`` read configs).
        Default: 0."""
        return 0

    def fit(self, trusted: Any) -> "Detector":
        raise NotImplementedError

    def score(self, items: Any) -> "np.ndarray | Scores":
        raise NotImplementedError

    def diagnostics(self) -> dict[str, Any]:
        """Optional JSON-serialisable facts about the fitted state (e.g. a reconstruction
        quality), stored with the result; empty by default. Diagnostics JSON cannot store are
        left out of the record with a warning naming the key; the scores are kept."""
        return {}

    def _check_is_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet: call fit(trusted) before score(items)"
            )

    @classmethod
    def describe(cls) -> str:
        """First paragraph of the class docstring, for ``harness list``."""
        doc = (cls.__doc__ or "").strip()
        return doc.split("\n\n")[0].replace("\n", " ") if doc else ""

    @classmethod
    def hyperparameter_docs(cls) -> str:
        """The ``Hyperparameters:`` section of the class docstring (empty if none)."""
        import inspect

        doc = inspect.cleandoc(cls.__doc__ or "")
        if "Hyperparameters:" not in doc:
            return ""
        section = doc.split("Hyperparameters:", 1)[1]
        return inspect.cleandoc(section.split("\n\n")[0])

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Default hyperparameters of the class (field name -> default)."""
        if not dataclasses.is_dataclass(cls):
            return {}
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out


@dataclass
class RunContext:
    """What a task is asked to build: one seed of one run.

    ``seed`` sets the data, the models and their training; ``quick`` asks for tiny data and
    models (tests). ``options`` holds the ``--option`` settings the user gave, already checked
    against the task's ``options`` table and coerced to the declared types
    (:meth:`Task.settings` adds the defaults). ``datasets`` narrows the episodes to build
    (``--dataset``); a worker process rebuilds one episode by calling ``episodes`` with
    ``datasets=[name]``, so a task must build the same episode whether it is asked for alone or
    with the others.
    """

    seed: int = 0
    quick: bool = False
    allow_invalid: bool = False
    datasets: Optional[Sequence[str]] = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    """One unit a detector is scored on: e.g. one MAD dataset with its quirky model.

    Attributes:
        name: dataset or pair-set name, unique within the task.
        trusted: items the detector is fitted on (normal only).
        test: items to score.
        labels: (n_test,) int, 1 = anomalous / misaligned.
        tags: per-test-item boolean arrays (e.g. ``agrees_with_gt``), (n_test,) each.
        validity: measured checks (accuracies, rates) and ``valid`` (bool).
        fingerprint: hash of everything that determines the numbers (data, model, task version).
        info: extra JSON-serialisable facts stored in the record (sizes, model path).
        source: where the models and data come from: ``"generated"`` for a task's own trained
            zoo, or a short description of real inputs (e.g. ``"llama-8b on addition.jsonl"``).
            The leaderboard never puts records of two sources in one table.
        models: role or model name -> fingerprint (:func:`harness.zoo.store.model_fingerprint`)
            of every model the numbers depend on. The leaderboard only compares records whose
            episodes have the same fingerprints.
    """

    name: str
    trusted: Any
    test: Any
    labels: np.ndarray
    tags: dict[str, np.ndarray]
    validity: dict[str, Any]
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    source: str = "generated"
    models: dict[str, str] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return bool(self.validity.get("valid", False))


class Task:
    """Base class of tasks. A task is three parts: a *source* (the models it needs, as recipes
    the harness trains and caches, and the episodes built on them), a *metric* (a detector's
    scores and the labels -> numbers) and a *report* (records -> its leaderboard section).

    Class attributes:
        name: registry name (``--task NAME``).
        items: the item type its episodes hold (:class:`harness.features.items.TextItems`: inputs of one
            model; :class:`harness.features.items.ModelItems`: models). Every detector that accepts that
            type runs on the task.
        kind: a label stored in the records (e.g. ``"mad"``); it does not decide which detectors
            run (``items`` does). Defaults to the task's name.
        version: bump when the data or the models change, so stored results are not reused.
        options: the ``--option KEY=VALUE`` settings the task accepts, ``name -> (type,
            default, meaning)``. The harness checks the table when the plugin registers, and
            every given option against it before any work (unknown names and values of the wrong
            type are usage errors); ``RunContext.options`` holds the given values coerced to
            their types (:meth:`settings` adds the defaults).
        report: the dotted name of the module that renders the task's records, with any of
            ``section(section) -> list[str]`` (its markdown in leaderboard/README.md),
            ``plots(section, out_dir) -> list[Path]`` (PNGs named with ``section.slug``),
            ``summary_row(record) -> dict`` (run-summary columns) and ``summary_notes(records)
            -> list[str]`` (lines printed before the run summary). The default report
            (:mod:`harness.leaderboard.report`) stands in for each one missing, and for all of them when
            ``report`` is empty. Imported only to render, so importing the task stays light.
    """

    name: ClassVar[str] = ""
    items: ClassVar[Optional[type]] = None
    kind: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    options: ClassVar[dict[str, tuple[type, Any, str]]] = {}
    report: ClassVar[str] = ""

    def settings(self, config: RunContext) -> dict[str, Any]:
        """Every option of ``options``: the given value (already checked and coerced), else the default."""
        return {name: config.options.get(name, default) for name, (_, default, _) in self.options.items()}

    def check(self, config: RunContext) -> None:
        """Raise ConfigError for a setting that cannot work (an option out of range, an unknown
        dataset), before anything is trained. The runner calls it for every seed's config first.
        Default: no check beyond the option types, which the harness checks itself."""

    def models(self, config: RunContext) -> Sequence[Any]:
        """The source's models: one :class:`harness.zoo.sources.ModelRecipe` per model the episodes of
        ``config`` need. The harness trains the missing ones once, for every seed of the run in
        one pool (longest first, ``--jobs`` at a time), and caches them by key; ``episodes``
        then loads them with ``recipe.load()``. Default: none (a task on
        models on disk, or with no model)."""
        return ()

    def episodes(self, config: RunContext) -> list[Episode]:
        """Build every episode (its models come from the cache). Invalid episodes are returned
        with ``validity["valid"] = False``; the runner reports and skips them."""
        raise NotImplementedError

    def metrics(self, episode: Episode, scores: Scores, seed: int) -> Optional[dict[str, Any]]:
        """The metric: scores -> JSON-serialisable numbers stored in the record. ``None`` (the
        default) takes the harness's: AUROC with a bootstrap interval on the items in
        ``scores.mask`` (``n_unscored`` counts the others) and, when the episode has an
        ``agrees_with_gt`` tag, on the subsets of anomalous items that agree / disagree with the
        ground truth (:func:`harness.scoring.default_metrics`)."""
        return None

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.split("\n\n")[0].replace("\n", " ") if doc else ""
