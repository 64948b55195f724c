"""The interfaces plugins implement: Task (builds episodes) and Detector (fit, then score).

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
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # the leaderboard machinery imports pandas; plugins need not
    from harness.leaderboard import Section

# task names, task kinds and detector names: what users type on the command line
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class NotFittedError(RuntimeError):
    """A detector's ``score`` was called before ``fit``."""


class ConfigError(ValueError):
    """A user-supplied configuration value is invalid; the message names the field."""


class Detector:
    """Base class of detectors. Subclasses are dataclasses whose fields are hyperparameters.

    Class attributes:
        name: the registry name (``--detector NAME``).
        task_kinds: task kinds this detector can score (built in: ``"mad"``, items are inputs
            of one model; ``"poser"``, items are models; a task plugin may bring its own kind).

    Methods:
        fit(trusted) -> self: learn from trusted (normal) items only, never from labels.
        score(items) -> (n_items,) float array, higher = more suspicious.
    """

    name: ClassVar[str] = ""
    task_kinds: ClassVar[tuple[str, ...]] = ("mad",)
    # what one job of this detector needs; the Ray executor requests it ({"cpus": 1, "gpus": 1}
    # for a detector that wants a GPU)
    resources: ClassVar[dict[str, float]] = {"cpus": 1.0, "gpus": 0.0}

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-serialisable dict (the dataclass fields)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def check_episode(self, episode: "Episode") -> None:
        """Raise ConfigError if the hyperparameters cannot work on ``episode`` (e.g. a layer
        index the episode's model does not have). The runner calls it for every job before
        running any, so a bad setting fails the run cleanly instead of writing error records.
        Default: no check."""

    def memory_need(self, episode: "Episode") -> int:
        """Bytes this detector needs on ``episode`` beyond the model's weights and one
        extraction batch (which the runner counts itself), e.g. its fitted statistics; the
        runner compares the total with the device's free memory before the first job. Must
        not load weights (``handle.n_layers``, ``d_model`` and ``n_parameters`` read configs).
        Default: 0."""
        return 0

    def fit(self, trusted: Any) -> "Detector":
        raise NotImplementedError

    def score(self, items: Any) -> np.ndarray:
        raise NotImplementedError

    def diagnostics(self) -> dict[str, Any]:
        """Optional JSON-serialisable facts about the fitted state (e.g. a reconstruction
        quality), stored with the result; empty by default. A value JSON cannot store makes the
        job an error record naming the key."""
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
class TaskConfig:
    """Options every task receives.

    ``options`` holds the ``--option`` settings the user gave, already checked against the
    task's ``options`` table and coerced to the declared types; defaults are not filled in
    (:func:`harness.options.resolve_options` adds them). ``datasets`` narrows the episodes to build (``--dataset``); a
    worker process rebuilds one episode by calling ``episodes`` with ``datasets=[name]``, so a
    task must build the same episode whether it is asked for alone or with the others.
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
    """Base class of tasks. A task builds episodes (models trained or loaded from the cache),
    turns a detector's scores into metrics, and renders its own leaderboard section.

    Class attributes:
        name: registry name (``--task NAME``).
        kind: detectors declare the kinds they support; built in: ``"mad"`` (items are inputs
            of one model) and ``"poser"`` (items are models). A plugin may bring a new kind:
            detectors that list it in ``task_kinds`` can score it.
        version: bump when the data or the models change, so stored results are not reused.
        options: the ``--option KEY=VALUE`` settings the task accepts, ``name -> (type,
            default, meaning)``. The runner validates every given option against this table
            (unknown names and values of the wrong type are usage errors) and passes the given
            values, coerced to their types, as ``TaskConfig.options`` (defaults not filled in:
            :func:`harness.options.resolve_options` adds them).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "mad"
    version: ClassVar[str] = "1"
    options: ClassVar[dict[str, tuple[type, Any, str]]] = {}

    def prepare(self, configs: Sequence[TaskConfig]) -> None:
        """Build, as one batch of work, what the episodes of all ``configs`` (one per seed of
        the run) will need, before the runner calls :meth:`episodes` for each of them.

        Optional: the default does nothing. A task that trains models overrides it to train
        the missing models of every seed in one pool, longest first, instead of seed after
        seed (the cores stay busy until the last model). :meth:`episodes` must still build
        whatever is missing, so a task works without it.
        """
        return None

    def episodes(self, config: TaskConfig) -> list[Episode]:
        """Build (or load from the cache) every episode. Invalid episodes are returned with
        ``validity["valid"] = False``; the runner reports and skips them."""
        raise NotImplementedError

    def metrics(self, episode: Episode, scores: np.ndarray, seed: int,
                diagnostics: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Scores -> JSON-serialisable metrics stored in the record. ``diagnostics`` are the
        detector's (e.g. which items it could not score); a task may leave out the parameter.
        Default: AUROC with a bootstrap interval (and, when the episode has an ``agrees_with_gt``
        tag, on the MAD subsets of anomalous items that agree / disagree with the ground truth)."""
        from harness.scoring import mad_metrics

        labels = np.asarray(episode.labels, dtype=int)
        agrees = episode.tags.get("agrees_with_gt", np.ones_like(labels, dtype=bool))
        return mad_metrics(labels, scores, agrees, seed=seed)

    # -- reporting: the run summary and the leaderboard section come from the task ---------
    @classmethod
    def summary_row(cls, record: dict[str, Any]) -> dict[str, Any]:
        """Columns of the run summary for one record (after dataset, detector and status).
        Default: AUROC and its interval."""
        from harness.report import default_summary_row

        return default_summary_row(record)

    @classmethod
    def summary_notes(cls, records: list[dict[str, Any]]) -> list[str]:
        """Text the run summary prints before its table (e.g. a per-pair validity table).
        Default: none."""
        return []

    @classmethod
    def leaderboard_section(cls, section: "Section") -> list[str]:
        """Markdown lines of this task's part of ``leaderboard/README.md`` for one section (one
        task, one source, one set of models). Default: detector x dataset AUROC table."""
        from harness.report import default_section

        return default_section(section)

    @classmethod
    def leaderboard_plots(cls, section: "Section", out_dir: Path) -> list[Path]:
        """PNG plots of one section written into ``out_dir`` (name them with
        ``section.slug``); returns the written paths. Default: none."""
        return []

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.split("\n\n")[0].replace("\n", " ") if doc else ""
