"""Real inputs for the MAD task: a model directory and a quirky dataset on disk give the same
numbers as the built-in path, and broken datasets are ConfigErrors naming the file."""

import json
import os
import shutil

import numpy as np
import pytest

from harness.interfaces import ConfigError, RunContext
from harness.plugins import get_registry
from harness.run.runner import RunOptions, run
from harness.tasks.mad.external import answer_words, load_records, resolve_model, split_records
from harness.tasks.mad.task import MadTask

QUICK = RunContext(seed=0, quick=True, datasets=["addition"], )
DETECTORS = ["activations_mahalanobis", "activations_lof"]
TEMPLATE = "{op1} + {op2} = {result}. {character}:"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def builtin():
    """The built-in quick addition episode and its records (trusted then test, as the model saw them)."""
    episode = MadTask().episodes(QUICK)[0]
    return episode, list(episode.trusted.records) + list(episode.test.records)


def metrics_by_detector(results):
    return {r.detector: r.record for r in results}


def test_external_model_dir_and_jsonl_give_the_builtin_aurocs(builtin, tmp_path, monkeypatch):
    episode, records = builtin
    registry = get_registry()
    common = dict(quick=True, allow_invalid=True)
    ours = metrics_by_detector(run(registry, "mad", DETECTORS, RunOptions(
        results_dir=tmp_path / "builtin", datasets=["addition"], **common)))
    # the model as a user has it: a save_pretrained directory elsewhere, and a fresh cache,
    # so the external run loads the weights and extracts the features itself
    model_dir = shutil.copytree(os.path.expandvars(episode.info["model_dir"]), tmp_path / "model")
    dataset = write_jsonl(tmp_path / "quirky_addition.jsonl", records)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "fresh-cache"))
    theirs = metrics_by_detector(run(registry, "mad", DETECTORS, RunOptions(
        results_dir=tmp_path / "external", task_options={"model": str(model_dir), "dataset": str(dataset)}, **common)))
    for detector in DETECTORS:
        a, b = ours[detector], theirs[detector]
        assert a["status"] == b["status"] == "ok"
        assert b["dataset"] == "quirky_addition" and b["config"]["episode"]["source"] == "external"
        for metric in ("auroc", "auroc_agree", "auroc_disagree"):
            np.testing.assert_allclose(b["metrics"][metric], a["metrics"][metric], rtol=1e-6)
        np.testing.assert_allclose(b["scores"], a["scores"], rtol=1e-5)
        assert b["labels"] == a["labels"] and b["tags"] == a["tags"]
        for key in ("alice_accuracy", "bob_accuracy", "valid"):
            assert b["validity"][key] == a["validity"][key]


def test_template_option_formats_the_statement(builtin, tmp_path):
    episode, records = builtin
    # one template formats one frame: the quirky frame's records, as a published dataset has them
    records = [r for r in records if r["frame"] == "quirky"]
    stripped = [{k: v for k, v in r.items() if k not in ("statement", "frame")} for r in records]
    path = write_jsonl(tmp_path / "no_statement.jsonl", stripped)
    config = RunContext(datasets=["named"], options={"model": os.path.expandvars(episode.info["model_dir"]), "dataset": str(path),
                                                     "template": TEMPLATE})
    external = MadTask().episodes(config)[0]
    assert external.name == "named"
    quirky = ~np.asarray(episode.tags["truthful_frame"])
    assert list(external.test.prompts) == [p for p, q in zip(episode.test.prompts, quirky) if q]
    assert list(external.trusted.prompts) == [r["statement"] for r in episode.trusted.records if r["frame"] == "quirky"]
    np.testing.assert_array_equal(external.labels, np.asarray(episode.labels)[quirky])
    for key in ("alice_accuracy", "bob_accuracy", "agree_accuracy", "n_alice_disagree", "n_bob_disagree", "n_agree"):
        assert external.validity[key] == episode.validity[key]


def test_split_rules_trusted_alice_easy_test_hard(tmp_path):
    def record(i, character, quantile):
        label = int(character == "Alice")
        return {"id": str(i), "character": character, "label": label, "alice_label": 1, "bob_label": 0,
                "difficulty": i, "difficulty_quantile": quantile, "statement": f"s{i}",
                "template_args": {"character": "Zed"}}

    records = [record(0, "Alice", 0.1), record(1, "Bob", 0.1), record(2, "Alice", 0.5), record(3, "Alice", 0.9),
               record(4, "Bob", 0.8), record(5, "Alice", 0.25), record(6, "Bob", 0.75)]
    trusted, test = split_records(load_records(write_jsonl(tmp_path / "d.jsonl", records)), tmp_path / "d.jsonl")
    assert [r["id"] for r in trusted] == ["0"]  # Alice, quantile < 0.25; names as given
    assert [r["id"] for r in test] == ["3", "4"]  # quantile > 0.75, both characters, file order


def test_choices_set_the_answer_words(tmp_path):
    base = {"id": "1", "character": "Alice", "label": 1, "alice_label": 1, "bob_label": 1, "difficulty": 1,
            "difficulty_quantile": 0.1, "statement": "x"}
    path = tmp_path / "d.jsonl"
    assert answer_words([base], path) == (" False", " True")
    assert answer_words([{**base, "choices": [" No", " Yes"]}], path) == (" No", " Yes")
    with pytest.raises(ConfigError, match="same two answer words"):
        answer_words([{**base, "choices": [" No", " Yes"]}, {**base, "choices": [" False", " True"]}], path)


GOOD = {"id": "a", "template_args": {"op1": 1, "op2": 2, "result": 3, "character": "Alice"}, "character": "Alice",
        "label": 1, "alice_label": 1, "bob_label": 0, "difficulty": 1, "difficulty_quantile": 0.1,
        "statement": "1 + 2 = 3. Alice:"}


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ('{"id": 1\n', "line 1 is not valid JSON"),
        (json.dumps(GOOD) + "\n[1, 2]\n", "record 2 is a list"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "difficulty_quantile"}), "no field 'difficulty_quantile'"),
        (json.dumps({**GOOD, "character": "Carol"}), "'character' must be 'Alice' or 'Bob'"),
        (json.dumps({**GOOD, "label": "yes"}), "'label' must be 0/1"),
        (json.dumps({**GOOD, "label": 0}), "'label' must equal alice_label"),
        (json.dumps({**GOOD, "difficulty_quantile": 3}), "must be a number in \\[0, 1\\]"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "statement"}), "no field 'statement'"),
    ],
)
def test_malformed_dataset_names_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "broken.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem) as err:
        load_records(path)
    assert str(path) in str(err.value)


def test_dataset_without_usable_split_or_format(tmp_path):
    only_trusted = write_jsonl(tmp_path / "easy.jsonl", [GOOD])
    with pytest.raises(ConfigError, match="no Alice test records") as err:
        split_records(load_records(only_trusted), only_trusted)
    assert str(only_trusted) in str(err.value)
    with pytest.raises(ConfigError, match="cannot be formatted"):
        load_records(only_trusted, template="{op1} {missing}")
    csv = tmp_path / "d.csv"
    csv.write_text("id\n")
    with pytest.raises(ConfigError, match="unknown dataset format '.csv'"):
        load_records(csv)
    with pytest.raises(ConfigError, match="does not exist"):
        load_records(tmp_path / "nope.jsonl")


def test_model_and_dataset_go_together(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="'model' is required"):
        MadTask().episodes(RunContext(options={"dataset": str(tmp_path / "d.jsonl")}))
    with pytest.raises(ConfigError, match="'dataset' is required"):
        MadTask().episodes(RunContext(options={"model": str(tiny_model_dir)}))
    with pytest.raises(ConfigError, match="option 'model'.*no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(str(tmp_path / "no" / "such" / "dir"))


def test_hub_id_is_downloaded_then_loaded_by_the_same_loader(monkeypatch, tiny_model_dir):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append(repo) or str(tiny_model_dir))
    handle = resolve_model("someone/quirky-model")
    assert calls == ["someone/quirky-model"] and handle.path == tiny_model_dir and handle.fingerprint

    def offline(repo, **kw):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConfigError, match="could not be fetched from the Hugging Face hub.*no network"):
        resolve_model("someone/other-model")


def test_parquet_gives_the_same_records(builtin, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    _, records = builtin
    path = tmp_path / "d.parquet"
    pd.DataFrame(records).to_parquet(path)
    loaded = load_records(path)
    assert [r["statement"] for r in loaded] == [r["statement"] for r in records]
    assert [r["label"] for r in loaded] == [r["label"] for r in records]


def test_load_from_disk_directory_gives_the_same_records(builtin, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, records = builtin
    path = tmp_path / "quirky"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(records[:10]),
                          "test": datasets.Dataset.from_list(records[10:])}).save_to_disk(str(path))
    loaded = load_records(path)
    assert [r["id"] for r in loaded] == [r["id"] for r in records]
    assert [r["template_args"] for r in loaded] == [r["template_args"] for r in records]


def test_directory_without_datasets_package_is_actionable(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ConfigError, match="needs the `datasets` package"):
        load_records(tmp_path)


def test_a_hub_dataset_id_is_fetched_once_as_a_snapshot_and_read(builtin, tmp_path, monkeypatch):
    import huggingface_hub

    from harness.tasks.mad.external import resolve_dataset

    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    _, records = builtin
    snapshot = tmp_path / "snapshot"  # what snapshot_download leaves: one parquet file per split
    (snapshot / "data").mkdir(parents=True)
    pd.DataFrame(records[:10]).to_parquet(snapshot / "data" / "test-00000-of-00001.parquet")
    pd.DataFrame(records[10:]).to_parquet(snapshot / "data" / "validation-00000-of-00001.parquet")
    calls = []

    def fake_download(repo_id, repo_type=None, allow_patterns=None):
        calls.append((repo_id, repo_type))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    path = resolve_dataset("EleutherAI/quirky_addition")
    assert calls == [("EleutherAI/quirky_addition", "dataset")]
    loaded = load_records(path)
    assert sorted(r["id"] for r in loaded) == sorted(r["id"] for r in records)
    assert resolve_dataset(str(snapshot)) == snapshot  # a local path is never looked up on the hub

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConfigError, match="could not be fetched from the Hugging Face hub.*no network"):
        resolve_dataset("someone/other-dataset")
