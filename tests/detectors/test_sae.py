import numpy as np
import pytest
import torch

from harness.detectors.sae import SAEDetector, SAEDiagMahalanobis, SAEL0
from harness.detectors.statistics import DiagonalMahalanobis
from harness.interfaces import ConfigError, NotFittedError
from harness.features.items import TextItems
from harness.scoring import auroc

torch.set_num_threads(1)


def sparse_items(n_trusted=300, n_test=300, d=32, n_atoms=64, n_layers=2, dense_anomalies=True, seed=0):
    """Normal activations are sums of 3 of 64 dictionary atoms (+ small noise); anomalous test
    items are dense Gaussian vectors of the same mean square (not sparse in the dictionary)."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)

    def sparse(n):
        codes = np.zeros((n, n_atoms))
        for row in codes:
            row[rng.choice(n_atoms, 3, replace=False)] = rng.exponential(size=3) + 0.5
        return codes @ atoms + 0.05 * rng.normal(size=(n, d))

    trusted = sparse(n_trusted)
    test = sparse(n_test)
    labels = np.r_[np.zeros(n_test // 2), np.ones(n_test - n_test // 2)].astype(int)
    if dense_anomalies:
        test[labels == 1] = rng.normal(size=(labels.sum(), d)) * np.sqrt((trusted**2).mean())
    as_items = lambda x: TextItems.from_arrays(np.repeat(x[None], n_layers + 1, axis=0))  # noqa: E731
    return as_items(trusted), as_items(test), labels


# An SAE trained on trusted items only has no latents for the dense anomalies; their L0 gives
# them away clearly, the diagonal Mahalanobis over latents less so (0.84 on this toy with
# these settings; above 0.9 when the SAE also saw the test pool, which no longer happens).
@pytest.mark.parametrize("cls, minimum", [(SAEDiagMahalanobis, 0.8), (SAEL0, 0.9)])
def test_dense_anomalies_are_found(cls, minimum):
    trusted, test, labels = sparse_items()
    detector = cls(l1=3e-2, steps=1000).fit(trusted)
    scores = detector.score(test)
    assert scores.shape == (len(labels),) and np.all(np.isfinite(scores))
    assert auroc(labels, scores) > minimum


@pytest.mark.parametrize("cls", [SAEDiagMahalanobis, SAEL0])
def test_identical_distributions_give_chance(cls):
    trusted, test, labels = sparse_items(n_test=1600, dense_anomalies=False)
    assert auroc(labels, cls(steps=400).fit(trusted).score(test)) == pytest.approx(0.5, abs=0.06)


def test_reconstruction_beats_the_mean_and_is_reported():
    trusted, test, _ = sparse_items()
    detector = SAEL0(l1=3e-2, steps=1000).fit(trusted)
    diagnostics = detector.diagnostics()
    assert diagnostics["layer"] == 1
    with torch.no_grad():
        x = detector._normalise(trusted.activations([1])[1])
        reconstruction = detector.sae_.decode(detector.sae_.encode(x)).numpy()
    fve = 1 - ((reconstruction - x.numpy()) ** 2).sum() / ((x.numpy() - x.numpy().mean(0)) ** 2).sum()
    assert diagnostics["fve"] == pytest.approx(fve, rel=1e-4)
    assert diagnostics["fve"] > 0.5  # far better than predicting the mean (FVE 0)
    assert 0 < diagnostics["trusted_l0"] < diagnostics["n_latents"] / 8  # sparse


def test_scores_are_the_documented_functions_of_the_latents():
    trusted, test, _ = sparse_items(n_trusted=100, n_test=60)
    mahalanobis = SAEDiagMahalanobis(steps=30).fit(trusted)
    scores = mahalanobis.score(test)
    latents = mahalanobis.latents(test.activations([1])[1])
    reference = DiagonalMahalanobis().fit(mahalanobis.latents(trusted.activations([1])[1])).score(latents)
    np.testing.assert_allclose(scores, reference)
    l0 = SAEL0(steps=30).fit(trusted)
    np.testing.assert_array_equal(l0.score(test), (latents > 0).sum(axis=1))  # same seed, same SAE


def test_trained_on_trusted_items_only(monkeypatch):
    trusted, test, _ = sparse_items(n_trusted=100, n_test=60)
    seen = []
    original = SAEDetector._train
    monkeypatch.setattr(SAEDetector, "_train", lambda self, x: (seen.append(x.copy()), original(self, x)))
    detector = SAEDiagMahalanobis(steps=10).fit(trusted)
    first = detector.score(test)
    np.testing.assert_array_equal(detector.score(test), first)
    assert len(seen) == 1  # scoring never retrains
    np.testing.assert_array_equal(seen[0], trusted.activations([1])[1])
    # an item's score does not depend on what it is scored with
    np.testing.assert_allclose(detector.score(TextItems.from_arrays(test.features().hidden[:, :7])), first[:7])


def test_seeded_and_global_rng_untouched():
    trusted, test, _ = sparse_items(n_trusted=80, n_test=40)
    state = torch.random.get_rng_state()
    first = SAEDiagMahalanobis(steps=10, seed=1).fit(trusted).score(test)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(first, SAEDiagMahalanobis(steps=10, seed=1).fit(trusted).score(test))


def test_validation_and_not_fitted():
    with pytest.raises(ConfigError, match="'expansion'"):
        SAEL0(expansion=0)
    with pytest.raises(ConfigError, match="'l1'"):
        SAEDiagMahalanobis(l1=-1.0)
    _, test, _ = sparse_items(n_trusted=10, n_test=10)
    with pytest.raises(NotFittedError, match="call fit"):
        SAEL0().score(test)
    assert SAEL0().diagnostics() == {}


def test_both_sae_detectors_share_one_trained_sae_through_the_cache(monkeypatch):
    trusted, test, _ = sparse_items(n_trusted=90, n_test=40, seed=3)  # activations no other test trains on
    trainings = []
    original = SAEDetector._trained_weights
    monkeypatch.setattr(SAEDetector, "_trained_weights",
                        lambda self, data: (trainings.append(self.name), original(self, data))[1])
    diag = SAEDiagMahalanobis(steps=12).fit(trusted)
    l0 = SAEL0(steps=12).fit(trusted)
    assert trainings == ["sae_diag_mahalanobis"]  # sae_l0 read the SAE the first one trained
    for name, value in l0.sae_.state_dict().items():
        assert torch.equal(value, diag.sae_.state_dict()[name])
    # what was read is what training gives, bit for bit
    fresh = original(SAEL0(steps=12), diag._normalise(diag.trusted_))
    for name, value in l0.sae_.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), fresh[name])
    np.testing.assert_array_equal(l0.score(test), SAEL0.l0(diag.latents(diag.item_activations(test))))
    # another hyperparameter is another SAE
    SAEL0(steps=13).fit(trusted)
    assert trainings == ["sae_diag_mahalanobis", "sae_l0"]
