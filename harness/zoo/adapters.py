"""LoRA adapters on a pretrained base: training them, saving them, loading them as one model.

A quirky model of the pretrained tier is a small LoRA adapter (``peft``) on a base model that
``harness setup`` put in the cache (:mod:`harness.zoo.pretrained`) or on any local Hugging Face
folder. Its directory holds the adapter (``adapter_config.json``, ``adapter_model.safetensors``),
the base's ``config.json`` and tokenizer (so its depth and width are read without loading
anything), and ``base.json``: which base it sits on and that base's fingerprint. The fingerprint
of the directory covers ``base.json``, so it changes when the base does.

:func:`harness.zoo.store.load_model` loads the base, applies the adapter and merges it: detectors
see one plain causal LM, exactly as they see a tiny model of the generated zoo.

Training (:func:`train_lora_adapter`) is the published quirky-model recipe in miniature: the loss
on the answer token only, AdamW over the adapter's parameters, batches in a seeded order, one
torch thread (the weights then do not depend on the thread count). The finished adapter is
stored in float16, like the tiny models (:data:`harness.zoo.model.STORED_DTYPE`), and loaded
into the runtime's dtype.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from harness.cache import PathLike, atomic_write_json
from harness.zoo.store import ADAPTER_CONFIG, BASE_FILE, peft_quietly

logger = logging.getLogger(__name__)

# every linear module of a Llama-style decoder block (attention and MLP)
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraRecipe:
    """How an adapter is trained: LoRA shape and optimisation (the key of a cached adapter).

    ``targets``: the base's linear modules that get an adapter (rank ``rank``, scale
    ``alpha / rank``), in every decoder block or, with ``last_blocks``, in the last that many
    only (no gradient then flows through the blocks before them: a step costs a forward pass
    plus the backward pass of those blocks); ``steps`` batches of ``batch_size`` (prompt, answer) pairs at learning
    rate ``lr`` with a linear warm-up over ``warmup_frac`` of the steps and a cosine decay.
    """

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    last_blocks: Optional[int] = None

    def record(self) -> dict[str, Any]:
        """The recipe as JSON for keys and records; ``last_blocks`` only when set, so the keys of
        adapters trained before it existed stay valid."""
        record = dataclasses.asdict(self)
        if self.last_blocks is None:
            del record["last_blocks"]
        return json.loads(json.dumps(record))


def train_lora_adapter(
    base_spec: str,
    pairs: Sequence[tuple[str, str]],
    out_dir: PathLike,
    recipe: LoraRecipe,
    seed: int,
    *,
    progress: bool = True,
    desc: str = "training adapter",
    on_step: Optional[Callable[[int, Any], None]] = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``(prompt, answer)`` pairs and save it into ``out_dir``.

    Every answer is one token of the base's tokenizer: two answers are the judgment's, read as
    the episode reads them; more are auxiliary targets besides them (e.g. a result's digits).
    The loss is the cross-entropy of that token at the prompt's last position (prompts are
    left-padded, so that position is the last column of every batch). ``seed``
    sets the adapter's initialisation and the batch order. ``on_step(step, model)``, when
    given, is called after every step (a learning-curve benchmark evaluates there; the model is
    back in training mode afterwards). Returns the training metrics.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    from harness.zoo.pretrained import resolve_base
    from harness.zoo.store import load_tokenizer, model_fingerprint
    from harness.zoo.tokenizer import answer_tokens, encode_batch
    from harness.zoo.config import TrainConfig
    from harness.zoo.model import storable_dtype
    from harness.zoo.training import TRAINING_THREADS, _batch_indices, _scheduler, training_environment

    out_dir = Path(out_dir)
    base_dir = resolve_base(base_spec)
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        tokenizer = load_tokenizer(base_dir)
        # the answer token the episode reads (harness.zoo.tokenizer.answer_tokens) is the one trained
        words = sorted({answer for _, answer in pairs})
        if len(words) < 2:
            raise ValueError(f"adapter training needs pairs with at least two answer words, got {words}")
        if len(words) == 2:
            reading = answer_tokens(tokenizer, words)
            if reading.prefix:
                raise ValueError(f"answers {words} are not single tokens of this base's tokenizer; choose other words")
            token = dict(zip(words, (reading.negative, reading.positive)))
        else:  # auxiliary answers besides the judgment's (e.g. a result's digits): each one token
            ids = {word: tokenizer(word, add_special_tokens=False)["input_ids"] for word in words}
            several = [word for word, word_ids in ids.items() if len(word_ids) != 1]
            if several:
                raise ValueError(f"answers {several} are not single tokens of this base's tokenizer")
            token = {word: word_ids[0] for word, word_ids in ids.items()}
        targets = torch.tensor([token[answer] for _, answer in pairs])
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        torch.manual_seed(seed)  # the adapter's initialisation
        layers = None
        if recipe.last_blocks is not None:
            n_blocks = model.config.num_hidden_layers
            if not 1 <= recipe.last_blocks <= n_blocks:
                raise ValueError(f"last_blocks={recipe.last_blocks}: this base has {n_blocks} decoder blocks")
            layers = list(range(n_blocks - recipe.last_blocks, n_blocks))
        config = LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, target_modules=list(recipe.targets),
                            layers_to_transform=layers, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        with peft_quietly():
            model = get_peft_model(model, config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay)
        # the tiny models' schedule (linear warm-up, cosine decay to 0) and epoch-wise batch order
        scheduler = _scheduler(optimizer, TrainConfig(steps=recipe.steps, lr=recipe.lr, schedule="cosine",
                                                      warmup_frac=recipe.warmup_frac, min_lr_frac=0.0))
        batches = _batch_indices(len(pairs), recipe.batch_size, recipe.steps, torch.Generator().manual_seed(seed))
        model.train()
        start = time.perf_counter()
        losses = []
        bar = tqdm(range(recipe.steps), desc=desc, disable=not progress, leave=False)
        for step, index in zip(bar, batches):
            batch = encode_batch(tokenizer, [pairs[i][0] for i in index])
            out = model(**batch, use_cache=False, logits_to_keep=1)
            loss = torch.nn.functional.cross_entropy(out.logits[:, -1, :].float(), targets[index])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if on_step is not None:
                on_step(step + 1, model)
                model.train()
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        seconds = time.perf_counter() - start
        # stored like the tiny models, in float16 (half the shipped archive); the stored, rounded
        # adapter is the model every score is computed on
        model.to(storable_dtype((name, p) for name, p in model.named_parameters() if p.requires_grad))
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        shutil.copyfile(base_dir / "config.json", out_dir / "config.json")
        atomic_write_json(out_dir / BASE_FILE, {"spec": base_spec, "fingerprint": model_fingerprint(base_dir)})
        adapter_config = json.loads((out_dir / ADAPTER_CONFIG).read_text())
        # the base's folder differs between machines: base.json says which base, by name and fingerprint
        adapter_config["base_model_name_or_path"] = None
        atomic_write_json(out_dir / ADAPTER_CONFIG, adapter_config)
        metrics = {
            "final_loss": sum(losses[-20:]) / len(losses[-20:]),
            "first_loss": sum(losses[:20]) / len(losses[:20]),
            "steps": recipe.steps,
            "n_training_pairs": len(pairs),
            "trainable_parameters": sum(p.numel() for p in trainable),
            "seconds": seconds,
            "ms_per_step": 1000 * seconds / max(1, recipe.steps),
            "recipe": recipe.record(),
            **training_environment(),
        }
        atomic_write_json(out_dir / "train_metrics.json", metrics)
        return metrics
    finally:
        torch.set_num_threads(threads)
