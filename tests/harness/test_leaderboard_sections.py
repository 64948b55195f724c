"""The leaderboard only puts numbers side by side when they come from the same models: records
of another model fingerprint, another task of the same kind, or another source (an external
model) for the same dataset name land in sections of their own. Nothing here trains a model."""

import json

import numpy as np
import pytest

import harness
from harness import leaderboard
from harness.cli import main
from harness.interfaces import Episode
from harness.features.items import TextItems
from harness.plugins import Registry
from harness.run.runner import RunOptions, run

from .conftest import ToyTask


class ModelToy(ToyTask):
    """The toy task on a named synthetic "model": the model's name sets its fingerprint and
    the size of the planted shift, so two models give different numbers."""

    name = "model_toy"
    kind = "mad"  # a label in the records: a third-party task below shares it
    options = {"model": (str, "a", "synthetic model name"), "source": (str, "generated", "episode source")}

    def episodes(self, config):
        model = config.options.get("model", "a")
        source = config.options.get("source", "generated")
        rng = np.random.default_rng(config.seed)
        shift = {"a": 2.0, "b": 0.3}.get(model, 1.0)
        trusted = rng.normal(size=(2, 100, 4))
        test = rng.normal(size=(2, 60, 4))
        labels = np.r_[np.zeros(30), np.ones(30)].astype(int)
        test[:, labels == 1] += shift
        return [Episode("shifted", TextItems.from_arrays(trusted), TextItems.from_arrays(test), labels,
                        {}, {"valid": True}, f"fp-{model}-{source}-{config.seed}",
                        source=source, models={"model": f"weights-of-{model}"})]


class OtherModelToy(ModelToy):
    """A third-party task of the same kind (``mad``) with the same dataset name."""

    name = "other_toy"


def make_registry():
    from harness.detectors.activations import ActivationsLOF, ActivationsMahalanobis

    class Plugin:
        @harness.hookimpl
        def register_tasks(self, register):
            register(ModelToy)
            register(OtherModelToy)

        @harness.hookimpl
        def register_detectors(self, register):
            register(ActivationsMahalanobis)
            register(ActivationsLOF)

    registry = Registry()
    registry.add_plugin(Plugin(), name="model-toys")
    return registry


@pytest.fixture()
def registry():
    return make_registry()


def _run(registry, results, detectors, task="model_toy", **options):
    return run(registry, task, detectors, RunOptions(results_dir=results, task_options=options))


def _auroc_of(section, detector):
    rows = section.frame[section.frame["detector"] == detector]
    assert len(rows) == 1, "one record per detector and dataset in a section"
    return float(rows["auroc"].iloc[0])


def test_two_model_fingerprints_for_one_dataset_are_kept_apart(tmp_path, registry):
    results = tmp_path / "records"
    [a_maha] = _run(registry, results, ["activations_mahalanobis", "activations_lof"], model="a")[:1]
    [b_maha] = _run(registry, results, ["activations_mahalanobis"], model="b")
    assert a_maha.record["model_fingerprints"] == {"model": "weights-of-a"}
    assert b_maha.record["model_fingerprint"] == "weights-of-b"
    assert a_maha.record["metrics"]["auroc"] != b_maha.record["metrics"]["auroc"]

    sections = leaderboard.load_sections(results, tmp_path)
    assert [(s.task, s.index) for s in sections] == [("model_toy", 0), ("model_toy", 1)]
    reference, other = sections
    assert set(reference.frame["model_fingerprint"]) == {"weights-of-a"}
    assert set(other.frame["model_fingerprint"]) == {"weights-of-b"}
    assert _auroc_of(reference, "activations_mahalanobis") == a_maha.record["metrics"]["auroc"]
    assert _auroc_of(other, "activations_mahalanobis") == b_maha.record["metrics"]["auroc"]

    readme = leaderboard.render(results, tmp_path, registry=registry)["README.md"]
    assert "Models: shifted (seed 0) `weights-`" in readme
    assert "task `model_toy`, other models (1)" in readme
    assert leaderboard.mixes(sections) and "weights-" in leaderboard.mixes(sections)[0]


def test_check_fails_on_a_mix(tmp_path, registry, monkeypatch, capsys):
    results, board = tmp_path / "records", tmp_path / "board"
    _run(registry, results, ["activations_mahalanobis"], model="a")
    monkeypatch.setattr(harness.plugins, "_registry", registry)
    args = ["leaderboard", "--results-dir", str(results), "--out-dir", str(board)]
    assert main(args) == 0 and main(args + ["--check"]) == 0
    _run(registry, results, ["activations_mahalanobis"], model="b")
    assert main(args) == 0  # rendered, but a mix is never "up to date"
    assert main(args + ["--check"]) == 1
    assert "mixed models: task `model_toy`, other models (1)" in capsys.readouterr().err


def test_models_json_keeps_the_reference_first(tmp_path, registry):
    results, board = tmp_path / "records", tmp_path / "board"
    _run(registry, results, ["activations_mahalanobis"], model="a")
    leaderboard.build(results, board, registry=registry)
    models = json.loads((board / "models.json").read_text())["models"]
    assert models == [{"task": "model_toy", "source": "generated", "dataset": "shifted", "seed": 0,
                       "episode_fingerprint": "fp-a-generated-0", "model_fingerprint": "weights-of-a",
                       "model_fingerprints": {"model": "weights-of-a"}}]
    # a retrained model with more records still does not displace the leaderboard's models
    _run(registry, results, ["activations_mahalanobis", "activations_lof"], model="b")
    reference = leaderboard.load_sections(results, board)[0]
    assert set(reference.frame["model_fingerprint"]) == {"weights-of-a"}


def test_a_third_party_task_of_the_same_kind_gets_its_own_table(tmp_path, registry):
    results = tmp_path / "records"
    [ours] = _run(registry, results, ["activations_mahalanobis"], model="a")
    [theirs] = _run(registry, results, ["activations_mahalanobis"], task="other_toy", model="b")
    assert theirs.record["task_kind"] == ours.record["task_kind"] == "mad"
    sections = leaderboard.load_sections(results, tmp_path)
    assert [(s.task, s.index) for s in sections] == [("model_toy", 0), ("other_toy", 0)]
    assert not leaderboard.mixes(sections)
    assert _auroc_of(sections[0], "activations_mahalanobis") == ours.record["metrics"]["auroc"]
    assert _auroc_of(sections[1], "activations_mahalanobis") == theirs.record["metrics"]["auroc"]
    readme = leaderboard.render(results, tmp_path, registry=registry)["README.md"]
    assert "## task `model_toy`" in readme and "## task `other_toy`" in readme


def test_an_external_model_on_a_same_named_dataset_gets_its_own_section(tmp_path, registry):
    results = tmp_path / "records"
    [tiny] = _run(registry, results, ["activations_mahalanobis"], model="a")
    [big] = _run(registry, results, ["activations_mahalanobis"], model="b", source="llama-8b on shifted.jsonl")
    assert big.record["source"] == "llama-8b on shifted.jsonl" and big.record["dataset"] == tiny.record["dataset"]
    assert big.path != tiny.path  # the external run never overwrites the generated model's record
    sections = leaderboard.load_sections(results, tmp_path)
    assert [(s.source, s.index) for s in sections] == [("generated", 0), ("llama-8b on shifted.jsonl", 0)]
    assert not leaderboard.mixes(sections)
    readme = leaderboard.render(results, tmp_path, registry=registry)["README.md"]
    assert "## task `model_toy`, llama-8b on shifted.jsonl" in readme
