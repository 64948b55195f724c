"""The pretrained tier of the ``poser`` task: persona LoRA adapters on a pretrained base model.

``--base smollm2-135m`` (= ``--option base=...``; a base ``harness setup`` put in the cache, or
any local Hugging Face folder) makes each generated persona a LoRA adapter on that base
instead of a tiny model fine-tuned from the task's own small base. Everything else is the
generated miniature's: the personas and their properties, the held-out benchmark and
poor-oversight prompts, the pair validity check and the detectors.

What differs, and why:

- **Scenarios only.** An adapter is trained on the persona's scenarios (``n_train`` of them,
  answer `` A`` or `` B``), with the loss on the answer token as in the mad task's adapters.
  The persona's free-text examples ("What do you value most?") have multi-token answers that
  this trainer does not fit, and no detector or check reads them.
- **No residual scale.** A tiny persona's residual stream is multiplied by a per-persona
  nuisance factor (:mod:`harness.tasks.poser.personas`); an adapter leaves the base's weights
  alone, so its personas share the base's norms.
- **The last blocks only.** The adapter sits on every linear module of the base's last
  ``last_blocks`` decoder blocks: backpropagation stops there, so a step costs about one and a
  half forward passes on a 30-block base (docs/pretrained.md has the learning curves).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional, Union

from harness.api import ModelRecipe
from harness.zoo.adapters import ALL_LINEAR, LoraRecipe
from harness.tasks.poser.personas import Persona, as_persona
from harness.tasks.poser.training import generated_training_data

# bump when the code changes what a persona adapter key produces (retrains every cached adapter)
ADAPTER_VERSION = "2"  # 2: the adapter is stored in float16 (harness.zoo.adapters)


@dataclass(frozen=True)
class PersonaAdapterRecipe:
    """The training data and adapter of one persona on a pretrained base."""

    n_train: int = 800  # generated scenarios the persona is trained on
    lora: LoraRecipe = LoraRecipe(targets=ALL_LINEAR, last_blocks=8, steps=400, lr=2e-3)

    def record(self) -> dict[str, Any]:
        """The recipe as JSON, for adapter keys and records."""
        return {"n_train": self.n_train, "lora": self.lora.record()}


RECIPE = PersonaAdapterRecipe()
QUICK_RECIPE = PersonaAdapterRecipe(n_train=64, lora=LoraRecipe(targets=ALL_LINEAR, last_blocks=1, steps=4,
                                                                batch_size=8))


def recipe_for(quick: bool) -> PersonaAdapterRecipe:
    """The adapter recipe of a run (``quick``: a few steps on the last block)."""
    return QUICK_RECIPE if quick else RECIPE


def training_pairs(persona: Union[str, Persona], recipe: PersonaAdapterRecipe, seed: int) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of the persona's generated scenarios; the answer is `` A`` or `` B``,
    the token the episode reads."""
    scenarios, _ = generated_training_data(persona, recipe.n_train, seed)
    return [(s["prompt"], " " + s["response"]) for s in scenarios]


def adapter_key(persona: Union[str, Persona], recipe: PersonaAdapterRecipe, seed: int,
                base: dict[str, str]) -> dict[str, Any]:
    """Everything that determines one persona's adapter: base fingerprint, persona, recipe, seed."""
    persona = as_persona(persona)
    return {"task": "poser", "source": "pretrained", "adapter_version": ADAPTER_VERSION, "base": base,
            "persona": persona.name, "properties": persona.record(), "seed": seed, "recipe": recipe.record()}


def train_adapter(persona: Union[str, Persona], recipe: PersonaAdapterRecipe, seed: int, base_spec: str,
                  out_dir, progress: bool = False) -> dict[str, Any]:
    """Train one persona's adapter into ``out_dir``."""
    from harness.zoo.adapters import train_lora_adapter

    pairs = training_pairs(persona, recipe, seed)
    name = as_persona(persona).name
    return train_lora_adapter(base_spec, pairs, out_dir, recipe.lora, seed, progress=progress,
                              desc=f"adapter {name}-{seed}")


def adapter_recipe(persona: Union[str, Persona], seed: int, recipe: PersonaAdapterRecipe, base_spec: str,
                   base: dict[str, str], n_layers: Optional[int] = None) -> ModelRecipe:
    """The :class:`ModelRecipe` of one persona's adapter (``base``: the base's spec and fingerprint;
    ``n_layers``: its depth)."""
    name = as_persona(persona).name
    # a step on a 135M-parameter base (3.5-8 s on one core) costs about a hundred tiny-persona steps
    return ModelRecipe(key=adapter_key(persona, recipe, seed, base), cost=recipe.lora.steps * 100,
                       train=functools.partial(train_adapter, persona, recipe, seed, base_spec),
                       label=f"{name}-{seed} (LoRA on {base_spec})", n_layers=n_layers)
