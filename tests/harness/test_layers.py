"""One layer convention: every detector that takes a layer resolves ``layer=L`` to hidden state L
(0 = embeddings, 1..n = block outputs, negative from the end); block-based detectors perturb
the block whose output is hidden state L; out-of-range and old 0-based block values are refused
with one message that says how to convert."""

import numpy as np
import pytest

from harness.detectors import BUILTIN_DETECTORS
from harness.detectors.basin import BasinMahalanobis, BasinVolume
from harness.interfaces import ConfigError
from harness.features.items import TextItems
from harness.layers import middle_block, resolve_layer, resolve_layers

N_LAYERS = 3  # hidden states 0..3


class RecordingItems(TextItems):
    """Items from arrays that remember which hidden states a detector read."""

    read: list

    def activations(self, layers=None):
        out = super().activations(layers)
        self.read.append(sorted(out))
        return out

    def attributions(self, layers=None):
        out = super().attributions(layers)
        self.read.append(sorted(out))
        return out


def recording_items(n=40, seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(N_LAYERS + 1, n, 6))
    base = TextItems.from_arrays(hidden, rng.normal(size=n), hidden * 0.5)
    items = RecordingItems(prompts=base.prompts, _hidden=base._hidden, _attributions=base._attributions,
                           _logodds=base._logodds, _n_layers=N_LAYERS)
    items.read = []
    return items


def layer_detectors():
    """Every built-in detector with a ``layer``/``layers`` field that reads features."""
    out = []
    for cls in BUILTIN_DETECTORS:
        fields = cls.hyperparameters()
        if TextItems not in cls.accepts or cls in (BasinVolume, BasinMahalanobis) or cls.name == "name_only":
            continue  # models as items / weight perturbation / name-prefix items: checked below
        if "layers" in fields or "layer" in fields:
            out.append(cls)
    return out


@pytest.mark.parametrize("cls", layer_detectors(), ids=lambda c: c.name)
@pytest.mark.parametrize("given, hidden_state", [(2, 2), (-1, N_LAYERS), (-N_LAYERS - 1, 0)])
def test_every_detector_reads_hidden_state_l_for_layer_l(cls, given, hidden_state):
    field = "layers" if "layers" in cls.hyperparameters() else "layer"
    value = [given] if field == "layers" else given
    params = {field: value}
    if "epochs" in cls.hyperparameters():
        params["epochs"] = 1
    detector = cls(**params)
    trusted = recording_items()
    detector.fit(trusted)
    assert trusted.read and all(read == [hidden_state] for read in trusted.read), (cls.name, trusted.read)


@pytest.mark.parametrize("cls", layer_detectors(), ids=lambda c: c.name)
def test_an_out_of_range_layer_is_refused_naming_the_range(cls):
    field = "layers" if "layers" in cls.hyperparameters() else "layer"
    detector = cls(**{field: [N_LAYERS + 1] if field == "layers" else N_LAYERS + 1})
    with pytest.raises(ConfigError, match=f"out of range; this model has hidden states 0..{N_LAYERS}"):
        detector.fit(recording_items())


@pytest.mark.parametrize("cls", [BasinVolume, BasinMahalanobis])
def test_basin_perturbs_the_block_whose_output_is_hidden_state_l(cls):
    assert cls(layer=2).engine_layer(N_LAYERS) == 1  # 0-based block 1 outputs hidden state 2
    assert cls(layer=-1).engine_layer(N_LAYERS) == N_LAYERS - 1
    assert cls(layer=None).engine_layer(N_LAYERS) is None and cls(layer="lm_head").engine_layer(N_LAYERS) == "lm_head"
    with pytest.raises(ConfigError, match="layer 0 out of range; this model has blocks 1..3"):
        cls(layer=0).engine_layer(N_LAYERS)
    with pytest.raises(ConfigError, match=f"this model has blocks 1..{N_LAYERS}"):
        cls(layer=N_LAYERS + 1).engine_layer(N_LAYERS)


def test_the_resolver_is_the_one_rule():
    assert resolve_layer(-1, 4, "x") == 4 and resolve_layer(0, 4, "x") == 0
    assert resolve_layers(None, 4, "x") == [1, 2, 3, 4]
    assert resolve_layers([-1, 4, 1], 4, "x") == [4, 1]  # duplicates folded, order kept
    assert [middle_block(n) for n in (1, 2, 3, 4, 6)] == [1, 1, 2, 2, 3]
    with pytest.raises(ConfigError, match="must be an integer hidden-state index"):
        resolve_layer("2", 4, "x")
    with pytest.raises(ConfigError, match="at least one layer"):
        resolve_layers([], 4, "x")
