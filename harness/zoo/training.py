"""Deterministic training of tiny causal LMs on (prompt, completion) pairs, and answer scoring.

``train_causal_lm`` trains with the cross-entropy loss on the completion tokens only
(the prompt, including its ``<bos>``, is context). Sequences are left-padded, so the last
prompt position is at the same index for every row of a batch; ``position_ids`` are
computed from the attention mask so absolute-position models (GPT-2) see padding-invariant
positions. Batches are drawn from a ``torch.Generator`` seeded by ``TrainConfig.seed``
(epoch-wise random permutations), so the same seed, model init and data give bitwise the
same weights on the same machine. Nothing here downloads anything.

Reproducibility across machines (measured in docs/reproducing-models.md):
training always runs on one intra-op thread (``TRAINING_THREADS``; the caller's setting is
restored afterwards), because two threads split reductions differently and changed the
trained weights; in-process and process-pool training then agree bitwise.
``torch.use_deterministic_algorithms`` changed nothing on CPU. What still differs between
machines is the CPU kernels: ATen's vectorised kernels (``ATEN_CPU_CAPABILITY``: default,
avx2, avx512) and MKL's matrix multiplications (``MKL_CBWR``) each change the weights in the
last float bits after a few steps, and training amplifies that. Pinning both
(:data:`PORTABLE_KERNEL_ENV`, set before the process starts) gives the weights an AVX2 CPU
gives; :func:`training_environment` records what a model was trained with.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.zoo.config import TrainConfig
from harness.zoo.tokenizer import answer_token_ids, position_ids_from_mask

logger = logging.getLogger(__name__)

# intra-op threads while training: one, whatever the process uses otherwise (HARNESS_TORCH_THREADS),
# so the weights do not depend on it
TRAINING_THREADS = 1
# the CPU kernels an AVX2 machine uses, pinned (environment of a fresh process; ATen and MKL
# read these once, at their first use): the same weights on every Intel CPU with AVX2 or AVX-512
PORTABLE_KERNEL_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def training_device() -> torch.device:
    """Where models train: the CPU, or ``HARNESS_TRAIN_DEVICE`` (e.g. ``cuda``) when set. The
    trained model comes back to the CPU either way; a GPU trains other bits than a CPU does
    (docs/reproducing-models.md), so the device is part of :func:`training_environment`."""
    return torch.device(os.environ.get("HARNESS_TRAIN_DEVICE", "cpu"))


def training_environment() -> dict[str, object]:
    """What, besides the recipe, decides the bits of trained weights: torch version, the CPU
    kernels in use (ATen's capability, MKL's reproducibility branch), the thread count and,
    when it is not the CPU, the training device."""
    environment: dict[str, object] = {
        "torch": torch.__version__,
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "mkl_branch": os.environ.get("MKL_CBWR", "auto"),
        "threads": TRAINING_THREADS,
    }
    device = training_device()
    if device.type != "cpu":
        environment["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return environment


def _with_training_threads(train):
    """Run ``train`` on ``TRAINING_THREADS`` intra-op threads, restoring the caller's count."""

    @functools.wraps(train)
    def wrapper(*args, **kwargs):
        previous = torch.get_num_threads()
        torch.set_num_threads(TRAINING_THREADS)
        try:
            return train(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[tuple[str, str]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenize and left-pad (prompt, completion) pairs into one block.

    Returns ``input_ids`` (n, L) long, ``attention_mask`` (n, L) long and ``loss_mask``
    (n, L) bool, where ``loss_mask[i, t]`` marks that token ``t`` is a completion token
    (predicted from position ``t - 1``). The prompt gets ``<bos>``; the completion none.
    """
    prompts = _token_ids(tokenizer, [p for p, _ in examples], add_special_tokens=True)
    distinct = list(dict.fromkeys(c for _, c in examples))  # a few answer words, each tokenised once
    ids_of = dict(zip(distinct, _token_ids(tokenizer, distinct, add_special_tokens=False)))
    completions = [ids_of[c] for _, c in examples]
    empty = next((i for i, c in enumerate(completions) if not c), None)
    if empty is not None:
        raise ValueError(f"empty completion for prompt {examples[empty][0]!r}")
    # one vectorised scatter instead of a Python loop over rows (the same block, bit for bit)
    prompt_lengths = np.fromiter(map(len, prompts), dtype=np.int64, count=len(prompts))
    completion_lengths = np.fromiter(map(len, completions), dtype=np.int64, count=len(completions))
    lengths = prompt_lengths + completion_lengths
    n, length = len(examples), int(lengths.max())
    tokens = np.fromiter(itertools.chain.from_iterable(p + c for p, c in zip(prompts, completions)),
                         dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(n), lengths)
    starts = length - lengths  # left padding: row i's tokens fill columns starts[i]..length-1
    columns = starts[rows] + np.arange(len(tokens)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    input_ids = np.full((n, length), tokenizer.pad_token_id, dtype=np.int64)
    input_ids[rows, columns] = tokens
    positions = np.arange(length)
    attention_mask = (positions[None, :] >= starts[:, None]).astype(np.int64)
    loss_mask = positions[None, :] >= (length - completion_lengths)[:, None]
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask), torch.from_numpy(loss_mask)


def _token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of ``texts``: straight from a fast tokenizer's Rust backend when it has one (the
    ids ``tokenizer(texts)`` gives, without building its Python batch), else through ``tokenizer``."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
    return tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=config.steps,
            pct_start=config.warmup_frac,
            anneal_strategy="cos",
            cycle_momentum=False,
            div_factor=25.0,
            final_div_factor=1e3,
        )
    if config.schedule == "cosine":
        warmup = max(1, int(config.warmup_frac * config.steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, config.steps - warmup)
            return config.min_lr_frac + (1 - config.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ValueError(f"unknown schedule {config.schedule!r}; expected 'onecycle' or 'cosine'")


def _batch_indices(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """Yield ``steps`` index tensors of shape (batch_size,) from epoch-wise permutations."""
    perm = torch.randperm(n, generator=generator)
    pos = 0
    for _ in range(steps):
        parts = []
        need = batch_size
        while need:
            if pos == n:
                perm = torch.randperm(n, generator=generator)
                pos = 0
            take = min(need, n - pos)
            parts.append(perm[pos : pos + take])
            pos += take
            need -= take
        yield torch.cat(parts)


def _completion_loss(logits: torch.Tensor, targets: torch.Tensor, answer_ids: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy over completion tokens; answer tokens get answer smoothing.

    logits: (n_tokens, vocab); targets: (n_tokens,); answer_ids: (k,) token ids of the answers.
    """
    if not smoothing or answer_ids.numel() < 2:
        return F.cross_entropy(logits, targets)
    losses = F.cross_entropy(logits, targets, reduction="none")
    is_answer = torch.isin(targets, answer_ids)
    if is_answer.any():
        logp = F.log_softmax(logits[is_answer], dim=-1)
        target_logp = logp.gather(1, targets[is_answer, None])[:, 0]
        others = (logp[:, answer_ids].sum(-1) - target_logp) / (answer_ids.numel() - 1)
        losses = losses.clone()
        losses[is_answer] = -(1 - smoothing) * target_logp - smoothing * others
    return losses.mean()


@_with_training_threads
def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    config: TrainConfig,
    progress: bool = True,
    desc: str = "",
    answer_logits_only: bool = False,
) -> dict:
    """Train ``model`` in place on (prompt, completion) pairs; loss on completion tokens only.

    ``answer_logits_only``: compute the vocabulary logits only at the positions that predict
    completion tokens (``logits_to_keep``), not at every position: with long prompts and a
    large vocabulary the full (batch, length, vocab) logits dominate memory and time. The
    loss is the same either way (up to float rounding); the default keeps the full logits.

    The loss of a batch is the mean token cross-entropy over all completion tokens of the
    batch. AdamW (no weight decay on biases, norms and embeddings is *not* special-cased:
    decay applies to every parameter with ``ndim >= 2``). Leaves the model in eval mode.

    Returns ``{"final_loss": mean loss of the last 5% of steps, "first_loss": loss of the
    first step, "steps", "seconds", "n_examples", "losses": list of per-step losses}``.
    """
    if not examples:
        raise ValueError("no training examples")
    input_ids, attention_mask, loss_mask = encode_pairs(tokenizer, examples)
    answer_ids = torch.tensor(answer_token_ids(tokenizer, config.answer_words) if config.answer_words else [],
                              dtype=torch.long)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=config.betas,
    )
    scheduler = _scheduler(optimizer, config)
    generator = torch.Generator().manual_seed(config.seed)
    device = training_device()
    model.to(device)
    answer_ids = answer_ids.to(device)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(
        _batch_indices(len(examples), config.batch_size, config.steps, generator),
        total=config.steps,
        desc=desc or "train",
        disable=not progress,
        mininterval=1.0,
    )
    for step, idx in enumerate(bar):
        mask = attention_mask[idx]
        keep = mask.any(0)  # left padding: drop leading all-pad columns
        first = int(keep.float().argmax())
        ids, mask, lmask = input_ids[idx, first:], mask[:, first:], loss_mask[idx, first:]
        if device.type != "cpu":
            ids, mask, lmask = ids.to(device), mask.to(device), lmask.to(device)
        target_mask = lmask[:, 1:]
        if answer_logits_only:
            # left padding: completions end every row, so the last `keep` positions hold every
            # position that predicts a completion token (plus the final one, which predicts nothing)
            keep = int(lmask.sum(1).max()) + 1
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                           logits_to_keep=keep).logits
            predicted = logits[:, :-1][target_mask[:, -(keep - 1):]]
        else:
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
            ).logits
            predicted = logits[:, :-1][target_mask]
        loss = _completion_loss(predicted, ids[:, 1:][target_mask], answer_ids, config.answer_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    seconds = time.perf_counter() - start
    model.to("cpu")
    model.eval()
    tail = max(1, config.steps // 20)
    metrics = {
        "final_loss": float(np.mean(losses[-tail:])),
        "first_loss": losses[0],
        "steps": config.steps,
        "seconds": seconds,
        "n_examples": len(examples),
        "losses": losses,
        **training_environment(),
    }
    logger.info("%s: %d steps in %.1fs, loss %.4f -> %.4f", desc or "train", config.steps, seconds,
                metrics["first_loss"], metrics["final_loss"])
    return metrics
