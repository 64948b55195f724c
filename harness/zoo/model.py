"""Tiny ``transformers`` causal language models built from a config object (no download).

``build_model`` returns a randomly initialised ``LlamaForCausalLM`` (default) or
``GPT2LMHeadModel`` sized by :class:`TinyModelConfig`, with the vocabulary and special
token ids of the given tokenizer. Initialisation is deterministic given ``seed`` and does
not touch the global RNG state. Dropout is off.

Llama uses rotary position embeddings, so with left padding its outputs do not depend on
how much padding precedes a prompt (up to float rounding) even when ``position_ids`` are
not passed. GPT-2 has learned absolute positions: callers must pass
``position_ids = attention_mask.cumsum(-1) - 1`` (clamped at 0) with left padding, as
:mod:`harness.zoo.training` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # torch and transformers load when a model is built, not when a recipe is read
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ARCHITECTURES = ("llama", "gpt2")


@dataclass
class TinyModelConfig:
    """Size of a tiny causal LM.

    ``d_model`` must be divisible by ``n_heads``; ``max_position`` bounds the sequence
    length (prompt + completion tokens, ``<bos>`` included).
    """

    arch: str = "llama"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    max_position: int = 64
    tie_embeddings: bool = False


def _hf_config(config: TinyModelConfig, tokenizer: PreTrainedTokenizerBase):
    from transformers import GPT2Config, LlamaConfig

    if config.d_model % config.n_heads:
        raise ValueError(f"d_model={config.d_model} not divisible by n_heads={config.n_heads}")
    ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vocab_size = len(tokenizer)
    if config.arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=config.d_model,
            intermediate_size=config.d_ff,
            num_hidden_layers=config.n_layers,
            num_attention_heads=config.n_heads,
            num_key_value_heads=config.n_heads,
            max_position_embeddings=config.max_position,
            attention_dropout=0.0,
            tie_word_embeddings=config.tie_embeddings,
            **ids,
        )
    if config.arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=config.d_model,
            n_inner=config.d_ff,
            n_layer=config.n_layers,
            n_head=config.n_heads,
            n_positions=config.max_position,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=config.tie_embeddings,
            **ids,
        )
    raise ValueError(f"unknown arch {config.arch!r}; expected one of {ARCHITECTURES}")


def build_model(config: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """Build a randomly initialised causal LM (float32, eval mode off: ``model.train()``).

    Input ``input_ids`` (batch, seq) -> ``logits`` (batch, seq, len(tokenizer)); hidden
    states (with ``output_hidden_states=True``) are ``n_layers + 1`` tensors of shape
    (batch, seq, d_model). The same ``seed`` gives bitwise-identical weights.
    """
    import torch
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    hf_config = _hf_config(config, tokenizer)
    model_cls = LlamaForCausalLM if config.arch == "llama" else GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(hf_config)
    model.config.use_cache = False
    return model


# The dtype a finished tiny model is stored in. float16 halves the shipped archive
# (leaderboard/zoo/) at a relative rounding error of at most 2^-11 (4.9e-4);
# bfloat16 would round 8x coarser. Scoring loads the float16 weights into float32 (the
# runtime's default dtype), so every detector still computes in float32.
STORED_DTYPE = "float16"


def save_trained_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir) -> None:
    """Round a trained model's weights to :data:`STORED_DTYPE` and ``save_pretrained`` it with its
    tokenizer into ``out_dir``. The stored, rounded weights are the model: its fingerprint,
    its validity gate and every score are computed on them. ``model`` is left in that dtype.

    Raises ``ValueError`` if a weight does not fit (overflow to inf), naming it, rather than
    storing a broken model.
    """
    model.to(storable_dtype(model.state_dict().items()))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def storable_dtype(named_tensors: Iterable[tuple[str, Any]]) -> Any:
    """:data:`STORED_DTYPE` as a torch dtype, once every floating-point tensor of
    ``named_tensors`` is checked to fit in it; ``ValueError`` naming the first that does not."""
    import torch

    dtype = getattr(torch, STORED_DTYPE)
    limit = torch.finfo(dtype).max
    for name, tensor in named_tensors:
        if tensor.is_floating_point() and bool((tensor.abs() > limit).any()):
            raise ValueError(f"weight {name} holds values beyond {STORED_DTYPE}'s range ({limit:g}); "
                             f"the model cannot be stored in {STORED_DTYPE}")
    return dtype
