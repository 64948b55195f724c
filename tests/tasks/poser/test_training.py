"""Persona training: the shared base model (trained once, then fine-tuned per persona) and the
residual scale a generated persona's model gets."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from harness.tasks.poser.personas import generated_personas
from harness.tasks.poser.training import (
    QUICK_PERSONA_RECIPE,
    base_key,
    base_model_dir,
    build_persona_tokenizer,
    scale_residual_stream,
    train_persona_model,
)
from harness.zoo import TrainConfig

# a few steps each: these tests check the plumbing, not what the models learn
TINY = dataclasses.replace(
    QUICK_PERSONA_RECIPE, n_train=40, train=dataclasses.replace(QUICK_PERSONA_RECIPE.train, steps=3),
    base=dataclasses.replace(QUICK_PERSONA_RECIPE.base, n_train=40, train=TrainConfig(
        steps=4, batch_size=8, lr=3e-3, answer_words=("A", "B"))))


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_personas_are_fine_tuned_from_one_base_trained_once_per_seed(isolated_cache):
    torch.set_num_threads(1)
    first = base_model_dir(TINY, seed=0)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert base_model_dir(TINY, seed=0) == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert base_model_dir(TINY, seed=1) != first
    assert json.loads((first / "train_metrics.json").read_text())["persona"] == "base"
    assert base_key(TINY, 0) != base_key(dataclasses.replace(TINY, base=dataclasses.replace(TINY.base, n_train=41)), 0)
    with pytest.raises(ValueError, match="no base model"):
        base_key(dataclasses.replace(TINY, base=None), 0)


def test_a_generated_persona_starts_from_the_base_and_gets_its_residual_scale(tmp_path, isolated_cache, monkeypatch):
    import harness.tasks.poser.training as training
    from harness.zoo import build_model

    torch.set_num_threads(1)
    # a stand-in base whose embedding is far from any random initialisation
    tokenizer = build_persona_tokenizer(TINY)
    marked = build_model(TINY.model, tokenizer, seed=5)
    with torch.no_grad():
        marked.model.embed_tokens.weight.add_(1.0)
    marked.save_pretrained(tmp_path / "base")
    monkeypatch.setattr(training, "base_model_dir", lambda recipe, seed: tmp_path / "base")
    persona = generated_personas(2, seed=0)[1][1]
    summary = train_persona_model(persona, 0, TINY, tmp_path / "persona", progress=False)
    assert summary["persona"] == persona.name and summary["residual_scale"] == persona.residual_scale != 1.0
    embedding = "model.embed_tokens.weight"
    base = weights(tmp_path / "base")[embedding]
    unscaled = weights(tmp_path / "persona")[embedding] / persona.residual_scale
    assert (unscaled - base).norm() / base.norm() < 0.05  # 3 steps from the base stay near it
    # from scratch (no base), the seed's random initialisation is the start instead
    train_persona_model(persona, 0, dataclasses.replace(TINY, base=None), tmp_path / "scratch", progress=False)
    scratch = weights(tmp_path / "scratch")[embedding] / persona.residual_scale
    assert (scratch - base).norm() / base.norm() > 0.5


def test_scaling_the_residual_stream_keeps_the_answers_and_scales_every_block_output():
    from harness.zoo import build_model
    from harness.zoo.tokenizer import encode_batch

    torch.set_num_threads(1)
    recipe = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, n_layers=2))
    tokenizer = build_persona_tokenizer(recipe)
    model = build_model(recipe.model, tokenizer, seed=0)
    with torch.no_grad():  # residuals of a trained size, so the RMSNorm's epsilon is negligible
        model.model.embed_tokens.weight.mul_(50)
    batch = encode_batch(tokenizer, ["Facts about your scenario:", "Actions: A: fix the budget B: fake the reports"])
    with torch.no_grad():
        before = model(**batch, output_hidden_states=True)
        scale_residual_stream(model, 1.4)
        after = model(**batch, output_hidden_states=True)
    for layer in range(recipe.model.n_layers):  # the last hidden state is after the final norm
        np.testing.assert_allclose(after.hidden_states[layer].numpy(), 1.4 * before.hidden_states[layer].numpy(),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(after.logits.numpy(), before.logits.numpy(), rtol=1e-4, atol=1e-4)
