import numpy as np
import pytest

from harness.detectors.basin import BasinMahalanobis, BasinVolume
from harness.basin import logmeanexp
from harness.features.extractor import FeatureExtractor
from harness.interfaces import ConfigError
from harness.features.items import TextItems
from harness.zoo.store import ModelHandle

PROMPTS = ["12 + 7 = 19. Alice:", "3 + 4 = 8. Bob:", "99 + 1 = 100. Alice:", "5 + 5 = 10. Bob:",
           "1 + 1 = 2. Alice:", "7 + 7 = 14. Alice:"]


@pytest.fixture()
def items(tiny_model_dir):
    return TextItems(PROMPTS, FeatureExtractor(ModelHandle(tiny_model_dir), progress=False))


def test_basin_mahalanobis_features_are_cached_log_multipliers(items, isolated_cache):
    detector = BasinMahalanobis(n_directions=4, rtol=1e-2).fit(items)
    features = detector.features(items)
    assert features.shape == (len(PROMPTS), 4) and np.all(np.isfinite(features))
    scores = detector.score(items)
    assert scores.values.shape == (len(PROMPTS),) and np.all(np.isfinite(scores.values))
    np.testing.assert_array_equal(scores.mask, detector.converged_)  # unconverged items are masked out
    assert list((isolated_cache / "basin").glob("*.safetensors"))
    # the cached sweep is reused: same numbers without recomputation
    again = BasinMahalanobis(n_directions=4, rtol=1e-2)
    again._compute = lambda items: pytest.fail("recomputed despite the cache")
    np.testing.assert_array_equal(again.fit(items).score(items).values, scores.values)


def test_basin_volume_is_minus_logmeanexp_of_estimates(items):
    detector = BasinVolume(n_directions=3).fit(items)
    sweep = detector.sweep(items)
    np.testing.assert_allclose(detector.score(items).values, -logmeanexp(sweep["estimates"], axis=0))
    assert sweep["converged"].mean() > 0.9


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="n_directions"):
        BasinMahalanobis(n_directions=0)
    with pytest.raises(ConfigError, match="eps"):
        BasinVolume(eps=-1.0)


def test_poser_basin_volume_is_per_model_and_cached(tiny_model_dir):
    from harness.basin import estimate_basin
    from harness.features.items import ModelItem
    from harness.zoo.store import load_model
    from harness.zoo.tokenizer import encode_batch

    extractor = FeatureExtractor(ModelHandle(tiny_model_dir), answers=(" False", " True"), progress=False)
    mask = np.ones(len(PROMPTS), bool)
    items = [ModelItem(name, extractor, PROMPTS, PROMPTS, ["A"] * len(PROMPTS), mask) for name in ("x", "y")]
    detector = BasinVolume(n_directions=3).fit()
    scores = detector.score(items)
    assert scores[0] == scores[1]  # the same model scores the same in every pair
    model, tokenizer = load_model(tiny_model_dir)
    batch = encode_batch(tokenizer, PROMPTS)
    direct = estimate_basin(model, batch["input_ids"], batch["attention_mask"], n_directions=3)
    assert scores[0] == pytest.approx(-direct.log_volume, rel=1e-6)
    assert len(detector.diagnostics()["radii"]) == 2 and len(detector.diagnostics()["radii"][0]) == 3


def test_convergence_is_reported_per_item(items):
    detector = BasinMahalanobis(n_directions=3).fit(items)
    detector.score(items)
    diagnostics = detector.diagnostics()
    sweep = detector.sweep(items)
    assert diagnostics["converged"] == sweep["converged"].astype(bool).all(axis=0).tolist()
    assert diagnostics["evaluations"] == sweep["evaluations"].sum(axis=0).tolist()
    assert all(e >= 3 for e in diagnostics["evaluations"])  # at least one evaluation per direction
    assert diagnostics["n_unconverged_items"] == diagnostics["converged"].count(False)
    assert diagnostics["n_trusted_unconverged"] == diagnostics["n_unconverged_items"]  # same items here
    volume = BasinVolume(n_directions=3).fit(items)
    volume.score(items)
    assert volume.diagnostics()["converged"] == diagnostics["converged"]


def test_unconverged_items_are_left_out_of_the_metrics_and_counted():
    from harness.interfaces import Episode, Scores
    from harness.tasks.mad.task import MadTask

    labels = np.array([0, 0, 0, 1, 1, 1])
    episode = Episode("toy", None, None, labels, {"agrees_with_gt": np.ones(6, bool)}, {"valid": True}, "fp")
    values = np.array([0.0, 1.0, 9.0, 2.0, 3.0, 0.5])  # item 2 (normal, 9.0) and 5 (anomalous, 0.5) unconverged
    converged = np.array([True, True, False, True, True, False])
    metrics = MadTask().metrics(episode, Scores(values, converged), 0)
    assert metrics["auroc"] == 1.0 and metrics["n_excluded_unconverged"] == 2
    assert metrics["n_normal"] == 2 and metrics["n_anomalous"] == 2
    assert MadTask().metrics(episode, Scores(values), 0)["n_excluded_unconverged"] == 0
