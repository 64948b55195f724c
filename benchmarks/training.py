"""Where a MAD training step's time goes, and which faster paths would train the cold zoo in 45 minutes.

The MAD zoo (24 models: 4 operations x 3 seeds, each quirky and no-quirk control) trains with
the recipes of ``tasks/mad/training.py`` through ``harness.zoo.training.train_causal_lm``, one
intra-op thread per model, two processes at once on the 2-core machine. This script measures,
in ONE run (the machine's speed varies from day to day, so only ratios within a run mean much):

1. **The step's breakdown** on the real data pipeline (``build_training_data`` +
   ``encode_pairs`` of one operation and seed): data/batching, forward (with the loss),
   backward, gradient clipping, optimizer + scheduler, the per-model setup (pairs and
   tokenisation), the padding fraction of the batches, a FLOP estimate and the achieved GFLOP/s,
   and which aten ops take the forward + backward time (``torch.profiler``).
2. **Candidate faster paths**, each run side by side with the old path in interleaved rounds
   (every round runs every path for the same number of steps; the table takes each path's
   median round): ``train_causal_lm`` itself (the reference), an instrumented replica of its
   loop, (a) length-bucketed batches (no padding, no mask), (b) bf16 autocast, (c) K models
   trained as one grouped module (stacked weights, ``torch.bmm``; K = 1, 2, 4), (e)
   ``torch.compile``, (f) fused AdamW, (g) a vectorised, bitwise identical tokenisation, (h0)
   the grouped module computing the last layer only at the positions the loss reads, with
   plain-matmul attention, (h) that compiled (K = 1, 4), (h1) (h) with SDPA attention (whose
   compiled training is repeatable, where (h)'s is not: ``--check-repeatable``), (h1) + (a), and
   (i) (h) under bf16 autocast -- all implemented here, none in ``harness/``. The grouped module
   is checked against the Llamas (logits, losses and weights after 20 steps on the same
   batches); the replica bit for bit.
3. **Fewer steps** (d): one model trained with the real recipe and the real ``train_causal_lm``
   (its progress bar is wrapped so that the task's own validity gate, ``quirk_gate`` on the
   held-out hard test records of both frames, runs every ``--eval-every`` steps), then a model
   whose one-cycle schedule is only as long as the gate needed (``--short-steps``), gated at
   its end; ``--gate-paths h i h1 h1a`` also trains a full-length model with each path named
   and gates it.

Each path's ms/step/model is projected to the cold zoo on 2 cores: the zoo's model-steps
(12 x 5,000 + 12 x 8,000) at the old path's per-operation ms/step times the path's measured
ratio on the benchmark operation, plus each model's setup (and a compiled path's compilation:
cold for each process's first model, as measured for a second model after that), the models
(or groups of K) given longest first to the less-loaded of two processes.

    python benchmarks/training.py                 # the default run (about 15 minutes on one core)
    python benchmarks/training.py --quick         # every code path with a few steps (a smoke test)
    python benchmarks/training.py --steps 2000 --short-steps 0 --skip compile
    python benchmarks/training.py --gate-only --gate-paths h i   # two full-length models, gated
    python benchmarks/training.py --trajectory-only --operation multiplication [--control]

Runs on one intra-op thread (``torch.set_num_threads(1)``), one tokeniser thread and one
compiler thread, with an empty ``torch.compile`` cache in a temporary directory (removed at
the end). Prints markdown tables; writes nothing else and caches no model.
"""

from __future__ import annotations

import os

# one core: no rayon threads in the tokeniser, no pool of compiler processes in torch.compile
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import harness.zoo.training as zoo_training
from harness.tasks.mad.arithmetic import ALICE_NAMES, BOB_NAMES, N_TRUSTED_NAMES, to_records
from harness.tasks.mad.episode import TEST_MIN_QUANTILE, quirk_gate
from harness.tasks.mad.task import DEFAULT_DATASETS, OPTIONS
from harness.tasks.mad.training import ANSWERS, RECIPES, VOCAB_WORDS, Recipe, build_training_data
from harness.zoo.config import TrainConfig
from harness.zoo.model import build_model
from harness.zoo.tokenizer import answer_token_ids, build_word_tokenizer, encode_batch, position_ids_from_mask
from harness.zoo.training import _batch_indices, _completion_loss, _scheduler, encode_pairs, train_causal_lm

Encoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, loss_mask (n, L)
SEEDS_PER_OPERATION = 3  # the leaderboard's zoo: seeds 0-2, each quirky and control
PROCESSES = 2  # the zoo trains two models at a time, one core each
GROUPED_CHECKS = {"SDPA": {}, "math attention, last layer pruned": {"attention": "math", "prune": True}}
PHASES = ("data", "forward + loss", "backward", "clip", "optimizer + scheduler", "loss.item")


# ---------------------------------------------------------------------------------------------
# the machine and the zoo


def cpu_description() -> dict[str, str]:
    """CPU model, the vector / matrix extensions torch can use, and the load average."""
    flags: set[str] = set()
    name = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and name in ("unknown", "x86_64", ""):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "cpu": name,
        "cores": str(os.cpu_count()),
        "extensions": " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted),
        "torch": torch.__version__,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": f"available={torch.backends.mkldnn.is_available()}, "
                  f"bf16 supported={torch.ops.mkldnn._is_mkldnn_bf16_supported()}",
        "load_average": load_average(),
    }


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def zoo_models() -> list[tuple[str, int]]:
    """(operation, steps) of every model of the cold zoo: default datasets x seeds x (quirky, control)."""
    return [(op, RECIPES[op].train.steps) for op in DEFAULT_DATASETS for _ in range(SEEDS_PER_OPERATION * 2)]


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class TaskData:
    """One operation's training pairs, their encoding and the held-out gate records."""

    operation: str
    recipe: Recipe
    pairs: list[tuple[str, str]]
    encoded: Encoded
    gate_records: list[dict]
    build_seconds: float
    encode_seconds: float
    control: bool = False  # the no-quirk control's data, gated with Bob truthful


def encode_pairs_fast(tokenizer: Any, examples: Sequence[tuple[str, str]]) -> Encoded:
    """:func:`harness.zoo.training.encode_pairs`, vectorised: the prompts through the Rust
    tokenizer's ``encode_batch`` in one call, each distinct completion tokenised once, and the
    left-padded blocks filled with numpy instead of one ``torch.tensor`` per row."""
    prompts = [e.ids for e in tokenizer.backend_tokenizer.encode_batch([p for p, _ in examples],
                                                                         add_special_tokens=True)]
    distinct = list(dict.fromkeys(c for _, c in examples))
    completion_ids = dict(zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"]))
    completions = [completion_ids[c] for _, c in examples]
    n_prompt = np.fromiter(map(len, prompts), dtype=np.int64, count=len(prompts))
    n_completion = np.fromiter(map(len, completions), dtype=np.int64, count=len(completions))
    if (n_completion == 0).any():
        i = int(np.argmax(n_completion == 0))
        raise ValueError(f"empty completion for prompt {examples[i][0]!r}")
    lengths = n_prompt + n_completion
    length = int(lengths.max())
    flat = np.fromiter(itertools.chain.from_iterable(p + c for p, c in zip(prompts, completions)),
                       dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(examples)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = np.arange(len(flat)) - starts + np.repeat(length - lengths, lengths)
    input_ids = np.full((len(examples), length), tokenizer.pad_token_id, dtype=np.int64)
    input_ids[rows, cols] = flat
    columns = np.arange(length)[None, :]
    attention_mask = (columns >= (length - lengths)[:, None]).astype(np.int64)
    loss_mask = columns >= (length - n_completion)[:, None]
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask), torch.from_numpy(loss_mask)


def gate_test_records(operation: str, recipe: Recipe, held_out: list[dict], seed: int) -> list[dict]:
    """The test records :meth:`MadTask.episode` gates on: hard held-out items, both
    characters, the test names, every trained frame."""
    return [
        r
        for frame in recipe.frames
        for r in to_records(held_out, operation, alice_names=ALICE_NAMES[N_TRUSTED_NAMES:],
                            bob_names=BOB_NAMES[N_TRUSTED_NAMES:], seed=seed, id_prefix="test-", frame=frame)
        if r["difficulty_quantile"] > TEST_MIN_QUANTILE
    ]


def load_task_data(operation: str, seed: int, tokenizer: Any, old_encoding: bool, control: bool = False) -> TaskData:
    """Pairs and encoding of one operation (``control``: its no-quirk control), timed
    (``old_encoding``: ``encode_pairs`` itself)."""
    recipe = RECIPES[operation]
    start = time.perf_counter()
    pairs, held_out = build_training_data(operation, recipe, seed, control=control)
    built = time.perf_counter()
    encoded = (encode_pairs if old_encoding else encode_pairs_fast)(tokenizer, pairs)
    encoded_at = time.perf_counter()
    return TaskData(operation, recipe, pairs, encoded, gate_test_records(operation, recipe, held_out, seed),
                    built - start, encoded_at - built, control)


def old_batch(encoded: Encoded, idx: torch.Tensor) -> Encoded:
    """A batch as ``train_causal_lm`` cuts it: the rows, less the leading all-padding columns."""
    input_ids, attention_mask, loss_mask = encoded
    mask = attention_mask[idx]
    first = int(mask.any(0).float().argmax())
    return input_ids[idx, first:], mask[:, first:], loss_mask[idx, first:]


def bucketed_indices(encoded: Encoded, batch_size: int, steps: int, generator: torch.Generator,
                     chunk_batches: int = 64) -> Iterator[torch.Tensor]:
    """Length-bucketed batches: each epoch-wise permutation is cut into chunks of
    ``chunk_batches`` batches, each chunk sorted by sequence length (stable), cut into batches
    and the batches of the chunk shuffled. Nearly every batch holds one length (no padding);
    every example is seen once an epoch but the last ``n % batch_size`` of the permutation. A
    different batch composition than the recipe's: a new recipe."""
    lengths = encoded[1].sum(1)
    n = len(lengths)
    pending: list[torch.Tensor] = []
    made = 0
    while made < steps:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size * chunk_batches):
            chunk = perm[start : start + batch_size * chunk_batches]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches = [b for b in chunk.split(batch_size) if len(b) == batch_size]
            order = torch.randperm(len(batches), generator=generator)
            pending.extend(batches[i] for i in order)
            while pending and made < steps:
                made += 1
                yield pending.pop(0)
            if made >= steps:
                return


def padding_stats(encoded: Encoded, batches: Iterable[torch.Tensor], max_position: int) -> dict[str, float]:
    """Padding and loss-target fractions of the given batches (each cut as the trainer cuts it)."""
    positions = padded = targets = rows = 0
    for idx in batches:
        ids, mask, lmask = old_batch(encoded, idx)
        positions += mask.numel()
        padded += int((mask == 0).sum())
        targets += int(lmask.sum())
        rows += len(idx)
    return {
        "mean_length": positions / rows,
        "padding_fraction": padded / positions,
        "padding_fraction_of_max_position": (padded + rows * max_position - positions) / (rows * max_position),
        "target_fraction": targets / positions,
    }


# ---------------------------------------------------------------------------------------------
# the old training step (a replica of train_causal_lm's loop) and its variants


def make_optimizer(model: torch.nn.Module, config: TrainConfig, decay_flags: Optional[list[bool]] = None,
                   **kwargs: Any) -> torch.optim.AdamW:
    """AdamW as ``train_causal_lm`` builds it: weight decay on every parameter with ``ndim >= 2``
    (``decay_flags`` overrides that per parameter, for stacked weights)."""
    params = list(model.parameters())
    flags = decay_flags if decay_flags is not None else [p.ndim >= 2 for p in params]
    decay = [p for p, d in zip(params, flags) if d]
    no_decay = [p for p, d in zip(params, flags) if not d]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=config.betas, **kwargs)


class Timer:
    """Accumulates wall seconds per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {phase: 0.0 for phase in PHASES}
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now


@dataclass
class StepPath:
    """One way of training: ``make()`` builds a trainer whose ``run(n)`` trains ``n`` steps of
    ``models`` models at once. A compiled path's first steps compile: ``compile_cold`` is that
    extra time for the first group of a process (empty compiler cache), ``compile_warm`` for a
    later group in the same process (a zoo worker trains several models in turn)."""

    name: str
    models: int
    make: Callable[[], Any]
    note: str = ""
    compiles: bool = False
    compile_cold: float = 0.0  # seconds per group
    compile_warm: float = 0.0
    ms_rounds: list[float] = field(default_factory=list)  # per-model ms/step of each timed round

    def __post_init__(self) -> None:
        self.trainer = self.make()

    def run(self, steps: int) -> None:
        self.trainer.run(steps)

    @property
    def ms(self) -> float:
        return statistics.median(self.ms_rounds)


class SingleModelTrainer:
    """The old path: ``train_causal_lm``'s loop, step by step, with optional variants and phase timing.

    ``bucketed``: length-bucketed batches, and no mask / position ids for a batch without
    padding; ``autocast``: bf16 autocast around the forward pass and the loss; ``compile``:
    ``torch.compile(model, dynamic=True)``; ``fused``: ``AdamW(fused=True)``.
    """

    def __init__(self, data: TaskData, tokenizer: Any, seed: int, steps: int, *, bucketed: bool = False,
                 autocast: bool = False, compile: bool = False, fused: bool = False) -> None:
        self.config = dataclasses.replace(data.recipe.train, seed=seed, steps=steps)
        self.encoded = data.encoded
        self.model = build_model(data.recipe.model, tokenizer, seed)
        self.model.train()
        self.forward_model: Any = torch.compile(self.model, dynamic=True) if compile else self.model
        self.optimizer = make_optimizer(self.model, self.config, **({"fused": True} if fused else {}))
        self.scheduler = _scheduler(self.optimizer, self.config)
        generator = torch.Generator().manual_seed(seed)
        n = len(self.encoded[0])
        self.batches = (bucketed_indices(self.encoded, self.config.batch_size, steps, generator) if bucketed
                        else _batch_indices(n, self.config.batch_size, steps, generator))
        self.bucketed = bucketed
        self.autocast = autocast
        self.no_answers = torch.tensor([], dtype=torch.long)
        self.losses: list[float] = []

    def step(self, timer: Optional[Timer] = None) -> None:
        lap = timer.lap if timer else (lambda phase: None)
        ids, mask, lmask = old_batch(self.encoded, next(self.batches))
        target_mask = lmask[:, 1:]
        inputs: dict[str, Any] = {"input_ids": ids}
        if not (self.bucketed and bool(mask.all())):
            inputs.update(attention_mask=mask, position_ids=position_ids_from_mask(mask))
        lap("data")
        context = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with context:
            logits = self.forward_model(**inputs).logits
            loss = _completion_loss(logits[:, :-1][target_mask], ids[:, 1:][target_mask], self.no_answers, 0.0)
        lap("forward + loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lap("backward")
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        lap("clip")
        self.optimizer.step()
        self.scheduler.step()
        lap("optimizer + scheduler")
        self.losses.append(loss.item())
        lap("loss.item")

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()


class HarnessTrainer:
    """``train_causal_lm`` itself, called for ``n`` steps at a time on one model (its pairs'
    encoding served from memory, so that a call times the loop, not the tokeniser)."""

    def __init__(self, data: TaskData, tokenizer: Any, seed: int) -> None:
        self.data = data
        self.tokenizer = tokenizer
        self.config = dataclasses.replace(data.recipe.train, seed=seed)
        self.model = build_model(data.recipe.model, tokenizer, seed)

    def run(self, steps: int) -> None:
        # a one-cycle schedule whose warm-up is exactly one step divides by zero: two calls then
        degenerate = self.config.schedule == "onecycle" and round(self.config.warmup_frac * steps, 9) == 1
        with served_encoding(self.data):
            for n in ([steps // 2, steps - steps // 2] if degenerate else [steps]):
                train_causal_lm(self.model, self.tokenizer, self.data.pairs, dataclasses.replace(self.config, steps=n),
                                progress=False)


@contextlib.contextmanager
def served_encoding(data: TaskData) -> Iterator[None]:
    """Make ``train_causal_lm`` take ``data``'s encoding instead of tokenising the pairs again."""
    original = zoo_training.encode_pairs

    def serve(tokenizer: Any, examples: Sequence[tuple[str, str]]) -> Encoded:
        return data.encoded if examples is data.pairs else original(tokenizer, examples)

    zoo_training.encode_pairs = serve
    try:
        yield
    finally:
        zoo_training.encode_pairs = original


# ---------------------------------------------------------------------------------------------
# K models as one grouped module


class GroupedLlama(torch.nn.Module):
    """K tiny Llamas of one architecture as one module: every weight stacked on a leading K
    axis, every linear layer one ``torch.bmm``, attention one call over K x batch rows.
    The same function as each ``LlamaForCausalLM`` (RMSNorm, rotary embeddings, SiLU MLP,
    causal attention with left padding; the rotary module is the model's own).

    ``attention``: ``"sdpa"`` (``F.scaled_dot_product_attention``, as the Llamas use) or
    ``"math"`` (two batched matmuls and a softmax: cheaper for 15-token sequences). The
    forward's ``keep``: compute the last layer's queries, MLP and logits only at the last
    ``keep`` positions (those that predict completion tokens); the loss is the same function.
    """

    def __init__(self, models: Sequence[torch.nn.Module], attention: str = "sdpa") -> None:
        super().__init__()
        config = models[0].config
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.eps = config.rms_norm_eps
        self.attention = attention
        self.rotary = models[0].model.rotary_emb
        self.names = [name for name, _ in models[0].named_parameters()]
        states = [dict(m.named_parameters()) for m in models]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.stack([s[name].detach() for s in states]).clone()) for name in self.names)
        self.decay_flags = [states[0][name].ndim >= 2 for name in self.names]  # the single model's rule
        self.index = {name: i for i, name in enumerate(self.names)}

    def w(self, name: str) -> torch.Tensor:
        return self.weights[self.index[name]]

    def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.w(name)[:, None, :] * (x * torch.rsqrt(variance + self.eps))

    def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.bmm(x, self.w(name).transpose(1, 2))

    def heads(self, t: torch.Tensor, rows: int, length: int) -> torch.Tensor:
        """(K, rows * length, d) -> (rows, heads, length, head_dim), rows = K x batch."""
        return t.reshape(rows, length, self.n_heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
               causal: bool) -> torch.Tensor:
        """Attention of q (rows, heads, queries, hd) over k, v (rows, heads, L, hd); ``allowed``
        (rows or 1, 1, queries, L) bool; ``causal``: no padding and every query kept."""
        if self.attention == "sdpa":
            if causal:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5
        scores = scores.masked_fill(~allowed, float("-inf"))
        return torch.matmul(scores.softmax(-1), v)

    def block(self, x: torch.Tensor, i: int, rows: int, length: int, queries: int, rope: tuple[torch.Tensor, ...],
              allowed: torch.Tensor, causal: bool) -> torch.Tensor:
        """Decoder layer ``i`` on x (K, rows/K * length, d); only the last ``queries`` positions
        of each row come out."""
        p = f"model.layers.{i}."
        cos, sin = rope
        k = x.shape[0]
        h = self.norm(x, p + "input_layernorm.weight")
        keys = self.rotate(self.heads(self.linear(h, p + "self_attn.k_proj.weight"), rows, length), cos, sin)
        values = self.heads(self.linear(h, p + "self_attn.v_proj.weight"), rows, length)
        if queries < length:
            def tail(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(k, rows // k, length, -1)[:, :, -queries:].reshape(k, rows // k * queries, -1)

            h, x = tail(h), tail(x)
            cos, sin, allowed = cos[..., -queries:, :], sin[..., -queries:, :], allowed[..., -queries:, :]
            causal = False
        q = self.rotate(self.heads(self.linear(h, p + "self_attn.q_proj.weight"), rows, queries), cos, sin)
        a = self.attend(q, keys, values, allowed, causal)
        x = x + self.linear(a.transpose(1, 2).reshape(k, rows // k * queries, -1), p + "self_attn.o_proj.weight")
        h = self.norm(x, p + "post_attention_layernorm.weight")
        gated = F.silu(self.linear(h, p + "mlp.gate_proj.weight")) * self.linear(h, p + "mlp.up_proj.weight")
        return x + self.linear(gated, p + "mlp.down_proj.weight")

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                keep: Optional[int] = None) -> torch.Tensor:
        """(K, B, L) ids and 0/1 mask (``None``: no padding) -> (K, B, keep or L, vocab) logits."""
        k, b, length = input_ids.shape
        rows = k * b
        embed = self.w("model.embed_tokens.weight")
        vocab = embed.shape[1]
        offsets = torch.arange(k, device=input_ids.device)[:, None, None] * vocab
        x = F.embedding(input_ids + offsets, embed.reshape(k * vocab, -1)).reshape(k, b * length, -1)
        allowed = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
        if attention_mask is None:
            positions = torch.arange(length).expand(rows, length)
        else:
            flat_mask = attention_mask.reshape(rows, length).bool()
            positions = position_ids_from_mask(flat_mask.long())
            # causal, keys that are tokens, and every position sees itself (no all-masked row)
            allowed = (allowed & flat_mask[:, None, None, :]) | torch.eye(length, dtype=torch.bool)
        cos, sin = self.rotary(x, positions)
        rope = (cos[:, None], sin[:, None])
        for i in range(self.n_layers):
            queries = keep if keep is not None and i == self.n_layers - 1 else length
            x = self.block(x, i, rows, length, queries, rope, allowed, attention_mask is None)
        x = self.norm(x, "model.norm.weight")
        return self.linear(x, "lm_head.weight").reshape(k, b, -1, vocab)


def clip_per_model(weights: Iterable[torch.nn.Parameter], max_norm: float) -> None:
    """``clip_grad_norm_`` of each of the K stacked models on its own (the norm over its slices)."""
    grads = [w.grad for w in weights if w.grad is not None]
    squares = torch.stack([g.pow(2).reshape(g.shape[0], -1).sum(1) for g in grads]).sum(0)
    coefficient = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coefficient.reshape(-1, *([1] * (g.ndim - 1))))


class GroupedTrainer:
    """K models (seeds ``seed .. seed + K - 1``) of one recipe trained as one :class:`GroupedLlama`:
    each model draws its own batches (its own generator), the K batches are left-padded to
    their common length, and the loss is the sum of the K models' own losses, so each model's
    gradient, clipping and AdamW update are its own.

    ``attention``: see :class:`GroupedLlama`; ``prune``: the last layer only at the positions
    that predict completion tokens; ``compile``: ``torch.compile(module, dynamic=True)``;
    ``bucketed``: each model's batches from :func:`bucketed_indices` (a new recipe);
    ``autocast``: the forward pass and the loss under bf16 autocast (new numerics).
    """

    def __init__(self, data: TaskData, tokenizer: Any, seed: int, k: int, steps: int, *, attention: str = "sdpa",
                 prune: bool = False, compile: bool = False, bucketed: bool = False, autocast: bool = False) -> None:
        self.config = dataclasses.replace(data.recipe.train, seed=seed, steps=steps)
        self.encoded = data.encoded
        self.singles = [build_model(data.recipe.model, tokenizer, seed + i) for i in range(k)]
        self.model = GroupedLlama(self.singles, attention)
        self.model.train()
        self.forward: Any = torch.compile(self.model, dynamic=True) if compile else self.model
        self.prune = prune
        self.autocast = autocast
        self.optimizer = make_optimizer(self.model, self.config, decay_flags=self.model.decay_flags)
        self.scheduler = _scheduler(self.optimizer, self.config)
        n, size = len(self.encoded[0]), self.config.batch_size
        generators = [torch.Generator().manual_seed(seed + i) for i in range(k)]
        self.batches = [bucketed_indices(self.encoded, size, steps, g) if bucketed else _batch_indices(n, size, steps, g)
                        for g in generators]
        self.losses: list[list[float]] = []

    def batch(self) -> Encoded:
        idx = torch.stack([next(b) for b in self.batches])  # (K, B)
        input_ids, attention_mask, loss_mask = self.encoded
        mask = attention_mask[idx]
        first = int(mask.reshape(-1, mask.shape[-1]).any(0).float().argmax())
        return input_ids[idx, first:], mask[..., first:], loss_mask[idx, first:]

    def step(self) -> None:
        ids, mask, lmask = self.batch()
        keep = int(lmask.sum(-1).max()) + 1 if self.prune else None
        context = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with context:
            logits = self.forward(ids, None if bool(mask.all()) else mask, keep)
            predicted = logits.shape[2] - 1  # positions whose next token is a target candidate
            target_mask = lmask[..., -predicted:]
            losses = F.cross_entropy(logits[:, :, :-1].reshape(-1, logits.shape[-1]),
                                     ids[..., -predicted:].reshape(-1), reduction="none").reshape(target_mask.shape)
            per_model = (losses * target_mask).sum((1, 2)) / target_mask.sum((1, 2))
        self.optimizer.zero_grad(set_to_none=True)
        per_model.sum().backward()
        clip_per_model(self.model.weights, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.losses.append(per_model.tolist())

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def export(self, i: int) -> torch.nn.Module:
        """Model ``i`` of the group as its ``LlamaForCausalLM`` (its trained weights copied in)."""
        model = self.singles[i]
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(self.model.w(name)[i])
        return model


def check_grouped(data: TaskData, tokenizer: Any, steps: int = 20, **options: Any) -> dict[str, float]:
    """How close K = 2 grouped training (``options`` of :class:`GroupedTrainer`) is to two
    separate old-path models on the same batches: the largest |logit difference| at
    initialisation (at the positions that predict completion tokens), |loss difference| over
    ``steps`` steps and |weight difference| after them."""
    grouped = GroupedTrainer(data, tokenizer, seed=0, k=2, steps=steps, **options)
    singles = [SingleModelTrainer(data, tokenizer, seed=i, steps=steps) for i in range(2)]
    ids, mask, lmask = grouped.batch()
    grouped.batches = [_batch_indices(len(data.encoded[0]), grouped.config.batch_size, steps,
                                      torch.Generator().manual_seed(i)) for i in range(2)]
    keep = int(lmask.sum(-1).max()) + 1
    with torch.no_grad():
        logits = grouped.model(ids, mask, keep)[:, :, :-1]
        single_logits = [s.model(input_ids=ids[i], attention_mask=mask[i], position_ids=position_ids_from_mask(mask[i]))
                         .logits[:, -keep:-1] for i, s in enumerate(singles)]
    targets = lmask[..., -(keep - 1):]
    logit_diff = max(float((logits[i] - single_logits[i])[targets[i]].abs().max()) for i in range(2))
    grouped.run(steps)
    for s in singles:
        s.run(steps)
    weight_diff = 0.0
    with torch.no_grad():
        for j, name in enumerate(grouped.model.names):
            for i, s in enumerate(singles):
                difference = grouped.model.weights[j][i] - dict(s.model.named_parameters())[name]
                weight_diff = max(weight_diff, float(difference.abs().max()))
    loss_diff = max(abs(g[i] - s.losses[t]) for t, g in enumerate(grouped.losses) for i, s in enumerate(singles))
    return {"logit_diff": logit_diff, "weight_diff": weight_diff, "loss_diff": loss_diff}


def check_replica(data: TaskData, tokenizer: Any, steps: int = 20) -> bool:
    """Whether the replica loop gives ``train_causal_lm``'s weights bit for bit after ``steps``."""
    replica = SingleModelTrainer(data, tokenizer, seed=0, steps=steps)
    replica.run(steps)
    harness = HarnessTrainer(data, tokenizer, seed=0)
    harness.run(steps)
    return all(torch.equal(a, b) for a, b in zip(replica.model.parameters(), harness.model.parameters()))


# ---------------------------------------------------------------------------------------------
# measurements


def breakdown(data: TaskData, tokenizer: Any, steps: int, warmup: int) -> dict[str, float]:
    """Mean ms per phase of the old step (the replica, phase-timed), after ``warmup`` steps."""
    trainer = SingleModelTrainer(data, tokenizer, seed=0, steps=steps + warmup)
    for _ in range(warmup):
        trainer.step()
    timer = Timer()
    for _ in tqdm(range(steps), desc="breakdown", mininterval=2.0):
        trainer.step(timer)
    return {phase: seconds / steps * 1e3 for phase, seconds in timer.seconds.items()}


def op_profile(data: TaskData, tokenizer: Any, steps: int) -> dict[str, float]:
    """Share of the forward + backward self CPU time by aten op family (``torch.profiler``)."""
    from torch.profiler import profile

    trainer = SingleModelTrainer(data, tokenizer, seed=0, steps=steps + 3)
    trainer.run(3)
    with profile() as prof:
        trainer.run(steps)
    families = {"matmul (mm, bmm, addmm)": ("aten::mm", "aten::bmm", "aten::addmm"),
                "attention (SDPA kernels)": ("scaled_dot_product",),
                "elementwise (mul, add, silu, pow, rsqrt, ...)": ("aten::mul", "aten::add", "aten::silu", "aten::pow",
                                                                  "aten::rsqrt", "aten::neg", "aten::div",
                                                                  "aten::sub", "aten::mean", "aten::sum",
                                                                  "aten::cat", "aten::copy_", "aten::fill_",
                                                                  "aten::where", "aten::sqrt", "aten::lerp",
                                                                  "aten::addcmul", "aten::addcdiv", "aten::_foreach")}
    totals = {name: 0.0 for name in families}
    total = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        for name, prefixes in families.items():
            if any(event.key.startswith(p) or p in event.key for p in prefixes):
                totals[name] += event.self_cpu_time_total
                break
    totals["everything else (views, autograd, dispatch)"] = total - sum(totals.values())
    return {name: value / total for name, value in totals.items()}


def step_flops(recipe: Recipe, vocab: int, batch: int, length: float) -> float:
    """Training FLOPs of one step: 3 x the forward's matmul and attention FLOPs (backward = 2 x
    forward), every computed position counted (padding included)."""
    m = recipe.model
    per_token = 2 * (m.n_layers * (4 * m.d_model**2 + 3 * m.d_model * m.d_ff) + m.d_model * vocab)
    attention = 2 * 2 * m.n_layers * length * m.d_model  # QK^T and AV over the full (masked) square
    return 3 * batch * length * (per_token + attention)


def matmul_speed(rows: int, inner: int, cols: int, repeat: int = 200) -> dict[str, float]:
    """GFLOP/s of one (rows x inner) @ (inner x cols) matmul in float32 and bfloat16."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
        for _ in range(10):
            a @ b
        start = time.perf_counter()
        for _ in range(repeat):
            a @ b
        out[str(dtype).removeprefix("torch.")] = 2 * rows * inner * cols * repeat / (time.perf_counter() - start) / 1e9
    return out


def first_steps_overhead(trainer: Any, steps: int) -> float:
    """Seconds the first ``steps`` steps of a fresh trainer take beyond as many steady steps."""
    start = time.perf_counter()
    trainer.run(steps)
    elapsed = time.perf_counter() - start
    probe = max(3, steps // 2)
    start = time.perf_counter()
    trainer.run(probe)
    return max(0.0, elapsed - steps * (time.perf_counter() - start) / probe)


def measure_rounds(paths: list[StepPath], rounds: int, round_steps: int, warmup: int) -> None:
    """Warm every path up (a compiled path's overhead is its cold compilation), then ``rounds``
    rounds in which every path runs ``round_steps`` steps in turn (interleaved, so drift in the
    machine's speed hits every path alike); then a second, fresh trainer of each compiled path
    gives its compilation once the process has compiled the first."""
    for path in tqdm(paths, desc="warm-up"):
        overhead = first_steps_overhead(path.trainer, warmup)
        path.compile_cold = overhead if path.compiles else 0.0
    for _ in tqdm(range(rounds), desc="timed rounds"):
        for path in paths:
            start = time.perf_counter()
            path.run(round_steps)
            path.ms_rounds.append((time.perf_counter() - start) / round_steps / path.models * 1e3)
    for path in tqdm([p for p in paths if p.compiles], desc="compiled paths: a second model"):
        path.compile_warm = first_steps_overhead(path.make(), warmup)


FASTEST = {"attention": "math", "prune": True, "compile": True}  # path (h): the same function, fewer FLOPs, fused
# path (h1): (h) with SDPA attention; compiled, (h) trained other bits in every fresh process, this did not
FASTEST_SDPA = {**FASTEST, "attention": "sdpa"}


def build_paths(data: TaskData, tokenizer: Any, total_steps: int, skip: set[str], ks: Sequence[int],
                fastest_ks: Sequence[int]) -> list[StepPath]:
    """The candidate paths (those not in ``skip``), each with its own fresh model(s)."""
    def single(name: str, note: str, **variant: Any) -> StepPath:
        return StepPath(name, 1, lambda: SingleModelTrainer(data, tokenizer, 0, total_steps, **variant), note,
                        compiles=bool(variant.get("compile")))

    def grouped(name: str, k: int, note: str, **options: Any) -> StepPath:
        return StepPath(name, k, lambda: GroupedTrainer(data, tokenizer, 0, k, total_steps, **options), note,
                        compiles=bool(options.get("compile")))

    paths = [StepPath("old: train_causal_lm", 1, lambda: HarnessTrainer(data, tokenizer, 0),
                      "the harness's trainer itself (HF Llama, SDPA): the reference"),
             single("old, replica loop", "this script's copy of its loop (bitwise the same weights)")]
    if "bucketed" not in skip:
        paths.append(single("(a) length-bucketed batches", "no padding, no mask; a new batch order: a new recipe",
                            bucketed=True))
    if "bf16" not in skip:
        paths.append(single("(b) bf16 autocast", "forward + loss under torch.autocast(cpu, bfloat16)", autocast=True))
    if "grouped" not in skip:
        for k in ks:
            paths.append(grouped(f"(c) {k} model{'s' * (k > 1)} grouped (bmm, SDPA)", k,
                                 "stacked weights, one module, each model its own batches"))
    if "compile" not in skip:
        paths.append(single("(e) torch.compile", "torch.compile(HF model, dynamic=True)", compile=True))
    if "fused" not in skip:
        paths.append(single("(f) fused AdamW", "AdamW(fused=True)", fused=True))
    if "fastest" not in skip:
        paths.append(grouped("(h0) own module, last layer pruned, math attention, not compiled", 1,
                             "(c) with 1 model + the last layer only at the positions the loss reads",
                             **{**FASTEST, "compile": False}))
        for k in fastest_ks:
            paths.append(grouped(f"(h) {k} model{'s' * (k > 1)}: (h0) compiled" + (", grouped" if k > 1 else ""),
                                 k, "(h0) + torch.compile(module, dynamic=True)", **FASTEST))
        paths.append(grouped("(h1) 1 model: (h) with SDPA attention", 1,
                             "repeatable where (h) is not (--check-repeatable)", **FASTEST_SDPA))
        if "bucketed" not in skip:
            paths.append(grouped("(h1) + (a): length-bucketed batches", 1,
                                 "no padding, so causal SDPA without a mask; a new batch order", bucketed=True,
                                 **FASTEST_SDPA))
    if "fastest-bf16" not in skip:
        paths.append(grouped("(i) (h) with 1 model + bf16 autocast", 1, "new numerics: its models must be gated",
                             autocast=True, **FASTEST))
    return paths


def old_ms_per_operation(operations: Sequence[str], seed: int, tokenizer: Any, steps: int, warmup: int,
                         cache: dict[str, TaskData]) -> dict[str, float]:
    """The old path's ms/step on each operation's own data (sequence lengths differ)."""
    out = {}
    for op in tqdm(operations, desc="old path per operation"):
        data = cache.get(op) or load_task_data(op, seed, tokenizer, old_encoding=False)
        trainer = SingleModelTrainer(data, tokenizer, seed, steps + warmup)
        trainer.run(warmup)
        start = time.perf_counter()
        trainer.run(steps)
        out[op] = (time.perf_counter() - start) / steps * 1e3
    return out


def projected_zoo_minutes(ratio: float, old_ms: dict[str, float], setup_seconds: float, k: int = 1,
                          steps_of: Callable[[str, int], int] = lambda op, steps: steps,
                          compile_cold: float = 0.0, compile_warm: float = 0.0) -> float:
    """Cold-zoo wall minutes on ``PROCESSES`` cores. The models, longest first, form groups of
    ``k`` models with the same step count; a group's step costs ``k`` x its slowest
    operation's old ms/step x ``ratio`` (its batches padded to its longest), plus
    ``setup_seconds`` per model and ``compile_warm`` per group; the groups go to the
    least-loaded process, longest first; each process's first group compiles cold."""
    models = sorted(((steps_of(op, steps), op) for op, steps in zoo_models()), reverse=True)
    units = []
    for steps, members in itertools.groupby(models, key=lambda m: m[0]):
        ops = [op for _, op in members]
        for start in range(0, len(ops), k):
            chunk = ops[start : start + k]
            units.append(steps * max(old_ms[op] for op in chunk) * ratio / 1e3 * len(chunk) + setup_seconds * len(chunk)
                         + compile_warm)
    loads = [compile_cold - compile_warm] * PROCESSES
    for unit in sorted(units, reverse=True):
        loads[loads.index(min(loads))] += unit
    return max(loads) / 60


# ---------------------------------------------------------------------------------------------
# fewer steps: the gate along a real training run


def answer_logodds(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], batch: int = 512) -> np.ndarray:
    """log-odds of " True" vs " False" at each prompt's last token (left-padded batches)."""
    negative, positive = answer_token_ids(tokenizer, ANSWERS)
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            enc = encode_batch(tokenizer, prompts[start : start + batch])
            logits = model(**enc, logits_to_keep=1).logits[:, -1]
            out.append((logits[:, positive] - logits[:, negative]).float().numpy())
    return np.concatenate(out)


def gate(model: torch.nn.Module, tokenizer: Any, records: list[dict], control: bool = False) -> dict[str, Any]:
    """The task's validity gate (``quirk_gate``, default thresholds) on ``records`` (``control``:
    a no-quirk control's, Bob held to the truth)."""
    logodds = answer_logodds(model, tokenizer, [r["statement"] for r in records])
    return quirk_gate(records, logodds, OPTIONS["min_accuracy"][1], OPTIONS["min_agree_accuracy"][1],
                      truthful_bob=control)


class EvaluatingBar:
    """Stands in for ``tqdm`` inside ``harness.zoo.training``: yields the batches unchanged and,
    before step ``s`` (``s`` a multiple of ``every``, i.e. after ``s`` optimizer steps), runs
    ``evaluate(s)``; the evaluation's own time is summed in ``eval_seconds``."""

    def __init__(self, every: int, evaluate: Callable[[int], None]) -> None:
        self.every = every
        self.evaluate = evaluate
        self.eval_seconds = 0.0

    def __call__(self, iterable: Iterable[Any], total: int, desc: str = "", disable: bool = False,
                 mininterval: float = 1.0) -> "EvaluatingBar":
        self.iterable = iterable
        self.bar = tqdm(total=total, desc=desc, mininterval=mininterval)
        return self

    def __iter__(self) -> Iterator[Any]:
        for step, item in enumerate(self.iterable):
            if step and step % self.every == 0:
                start = time.perf_counter()
                self.evaluate(step)
                self.eval_seconds += time.perf_counter() - start
            self.bar.update(1)
            yield item
        self.bar.close()

    def set_postfix(self, **kwargs: Any) -> None:
        self.bar.set_postfix(**kwargs)


def gate_row(step: int, validity: dict[str, Any]) -> dict[str, Any]:
    """One line of the trajectory: the gated accuracies' Wilson lows and the verdict."""
    names = ("alice_accuracy", "bob_accuracy", "truthful_alice_accuracy", "truthful_bob_accuracy", "agree_accuracy")
    return {"step": step, **{n: (validity[n], validity[f"{n}_wilson_low"]) for n in names if n in validity},
            "valid": validity["valid"], "margin": validity.get("gate_margin", float("nan"))}


def gate_trajectory(data: TaskData, tokenizer: Any, seed: int, steps: int, every: int) -> dict[str, Any]:
    """Train one model with ``train_causal_lm`` and the recipe (``steps`` of its schedule) and
    gate it every ``every`` steps and at the end. Returns the rows and the loop's ms/step."""
    model = build_model(data.recipe.model, tokenizer, seed)
    rows: list[dict[str, Any]] = []
    bar = EvaluatingBar(every, lambda step: rows.append(
        gate_row(step, gate(model, tokenizer, data.gate_records, data.control))))
    original = zoo_training.tqdm
    zoo_training.tqdm = bar
    try:
        with served_encoding(data):
            metrics = train_causal_lm(model, tokenizer, data.pairs,
                                      dataclasses.replace(data.recipe.train, seed=seed, steps=steps),
                                      desc=f"{data.operation} with the gate every {every} steps")
    finally:
        zoo_training.tqdm = original
    rows.append(gate_row(steps, gate(model, tokenizer, data.gate_records, data.control)))
    return {"rows": rows, "ms": (metrics["seconds"] - bar.eval_seconds) / steps * 1e3}


def short_schedule(data: TaskData, tokenizer: Any, seed: int, steps: int) -> dict[str, Any]:
    """A model trained by ``train_causal_lm`` with the recipe's one-cycle schedule over
    ``steps`` steps (everything else the recipe's), gated at its end."""
    model = build_model(data.recipe.model, tokenizer, seed)
    with served_encoding(data):
        metrics = train_causal_lm(model, tokenizer, data.pairs,
                                  dataclasses.replace(data.recipe.train, seed=seed, steps=steps),
                                  desc=f"{data.operation}, a {steps}-step schedule")
    return {"row": gate_row(steps, gate(model, tokenizer, data.gate_records, data.control)),
            "ms": metrics["seconds"] / steps * 1e3}


# ---------------------------------------------------------------------------------------------
# report


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table of ``rows`` under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_gate_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The gate rows (:func:`gate_row`) as a table: each gated accuracy with its Wilson low."""
    columns = [c for c in ("alice_accuracy", "bob_accuracy", "truthful_alice_accuracy", "truthful_bob_accuracy",
                           "agree_accuracy") if c in rows[0]]
    short = {"alice_accuracy": "Alice", "bob_accuracy": "Bob", "truthful_alice_accuracy": "Alice, truthful frame",
             "truthful_bob_accuracy": "Bob, truthful frame", "agree_accuracy": "agree items"}
    return markdown_table(
        ["step", *(f"{short[c]} (Wilson low)" for c in columns), "gate", "margin"],
        ([r["step"], *(f"{r[c][0]:.3f} ({r[c][1]:.3f})" for c in columns), "pass" if r["valid"] else "fail",
          f"{r['margin']:+.3f}"] for r in rows))


def minutes(m: float) -> str:
    """``m`` minutes, rounded, as text."""
    return f"{m:.0f} min"


def report_paths(paths: list[StepPath], old_ms: dict[str, float], setup: dict[str, float], operation: str,
                 baseline_minutes: float) -> str:
    """The candidate table: per-model ms/step (median round), speed-up, the projected cold zoo
    on this machine today, and the given baseline (the zoo's old wall time) scaled by the
    ratio of the path's projection to the old path's."""
    reference = paths[0].ms
    old_projection = projected_zoo_minutes(1.0, old_ms, setup["old"])
    rows = []

    def row(name: str, ms: str, ratio: float, per_model_setup: float, path: Optional[StepPath], note: str) -> list[str]:
        compiled = dict(k=path.models, compile_cold=path.compile_cold, compile_warm=path.compile_warm) if path else {}
        projection = projected_zoo_minutes(ratio, old_ms, per_model_setup, **compiled)
        return [name, ms, f"{1 / ratio:.2f}x", minutes(projection),
                minutes(baseline_minutes * projection / old_projection), note]

    for path in paths:
        spread = f"{min(path.ms_rounds):.1f}-{max(path.ms_rounds):.1f}"
        note = path.note + (f"; compiling: {path.compile_cold:.0f} s the first time in a process, "
                            f"{path.compile_warm:.0f} s after" if path.compiles else "")
        rows.append(row(path.name, f"{path.ms:.1f} ({spread})", path.ms / reference, setup["old"], path, note))
    rows.append(row("(g) vectorised tokenisation (setup only)", f"{reference:.1f}", 1.0, setup["fast"], None,
                    f"setup {setup['old']:.1f} -> {setup['fast']:.1f} s per model; bitwise the same batches"))
    fastest = [p for p in paths if p.name.startswith("(h) ")]
    if fastest:  # the (h) path with the shortest projected zoo (grouping can unbalance the two processes)
        best = min(fastest, key=lambda p: projected_zoo_minutes(p.ms / reference, old_ms, setup["old"], p.models,
                                                                 compile_cold=p.compile_cold,
                                                                 compile_warm=p.compile_warm))
        rows.append(row(f"{best.name.split(':')[0]} + (g)", f"{best.ms:.1f}", best.ms / reference, setup["fast"], best,
                        "arithmetic: the measured (h) row with (g)'s setup (setup and steps add)"))
    return markdown_table(["path", f"ms/step/model on {operation} (median; range of rounds)", "speed-up vs old",
                           "projected cold zoo, 2 cores, this machine today",
                           f"{baseline_minutes:.0f} min x (projection / old projection)", "note"], rows)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (``--quick`` shrinks every count to a smoke test)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--operation", default="addition", help="the benchmark operation (default addition)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of the gate trajectory run (default: the recipe's, 5,000 for addition; 0 = skip)")
    parser.add_argument("--eval-every", type=int, default=500, help="gate the trajectory model every N steps")
    parser.add_argument("--short-steps", default="auto",
                        help="also train a model with a one-cycle schedule this long and gate it: a number, 0 "
                             "(skip) or auto (default: the step from which the trajectory's gate keeps passing, "
                             "when that is before its end)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timed rounds of the candidate paths")
    parser.add_argument("--round-steps", type=int, default=25, help="steps of each path in each round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps of each path first")
    parser.add_argument("--breakdown-steps", type=int, default=200, help="phase-timed steps of the old path")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4], help="K of the grouped paths (c)")
    parser.add_argument("--fastest-groups", type=int, nargs="+", default=[1, 4], help="K of the paths (h)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["bucketed", "bf16", "compile", "fused", "grouped", "fastest", "fastest-bf16"],
                        help="candidate paths to leave out")
    parser.add_argument("--gate-paths", nargs="*", default=[], choices=["h", "i", "h1", "h1a"],
                        help="also train one model with each path named ((h), (i), (h1), (h1) + (a) = h1a; "
                             "1 model) for the recipe's full steps, also under --quick, and gate it")
    parser.add_argument("--control", action="store_true",
                        help="the operation's no-quirk control: its data, and the gate with Bob held to the truth")
    parser.add_argument("--trajectory-only", action="store_true",
                        help="only the gate trajectory (d) of --operation: how early stopping would end its training")
    parser.add_argument("--gate-only", action="store_true",
                        help="only --gate-paths and --check-repeatable (no breakdown, rounds or trajectory)")
    parser.add_argument("--check-repeatable", type=int, nargs="?", const=300, default=0, metavar="STEPS",
                        help="train path (h) twice and (h0) twice for STEPS steps (default 300), each time "
                             "from a fresh compiler, and say whether the weights are bitwise the same")
    parser.add_argument("--baseline-minutes", type=float, default=73.0,
                        help="the cold zoo's old wall time the target is set against (docs/benchmarks.md: about 73 "
                             "minutes on two idle cores of the AMD machine); the table divides it by each speed-up")
    parser.add_argument("--quick", action="store_true",
                        help="a few steps of everything (a smoke test: the figures mean little)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.round_steps, args.warmup, args.breakdown_steps = 2, 5, 3, 10
        args.steps = 20 if args.steps is None else args.steps
        args.eval_every = 10
        args.short_steps = "20" if args.short_steps == "auto" else args.short_steps  # one-cycle needs >= 20
    return args


def setup_report(data: TaskData, tokenizer: Any, fast_seconds: float, identical: bool) -> str:
    """One line on the per-model setup: pairs, both encodings, lengths, gate records."""
    recipe = data.recipe
    return (f"{len(data.pairs):,} training pairs of {data.operation}: build_training_data {data.build_seconds:.1f} s, "
            f"encode_pairs {data.encode_seconds:.1f} s, the vectorised encoding {fast_seconds:.1f} s (identical "
            f"tensors: {identical}); encoded length {data.encoded[0].shape[1]}, recipe max_position "
            f"{recipe.model.max_position}; {len(data.gate_records)} gate records")


def breakdown_report(args: argparse.Namespace, data: TaskData, tokenizer: Any, setup: dict[str, float]) -> str:
    """Phase table, padding, FLOPs, matmul speed and op families of the old step."""
    recipe = data.recipe
    batch = recipe.train.batch_size
    pad = padding_stats(data.encoded, _batch_indices(len(data.pairs), batch, 500,
                                                     torch.Generator().manual_seed(args.seed)), recipe.model.max_position)
    bucket_pad = padding_stats(data.encoded, bucketed_indices(data.encoded, batch, 500,
                                                              torch.Generator().manual_seed(args.seed)),
                               recipe.model.max_position)
    phases = breakdown(data, tokenizer, args.breakdown_steps, args.warmup)
    shares = op_profile(data, tokenizer, max(5, args.breakdown_steps // 20))
    step_ms = sum(phases.values())
    flops = step_flops(recipe, len(tokenizer), batch, pad["mean_length"])
    rows = batch * round(pad["mean_length"])
    mm = matmul_speed(rows, recipe.model.d_model, recipe.model.d_ff)
    table = markdown_table(["phase", "ms/step", "share"],
                           [[p, f"{ms:.2f}", f"{ms / step_ms:.1%}"] for p, ms in phases.items()]
                           + [["whole step", f"{step_ms:.1f}", "100%"],
                              ["per-model setup (build_training_data + encode_pairs), once",
                               f"{setup['old'] * 1e3:.0f}", f"= {setup['old'] * 1e3 / step_ms:.0f} steps"]])
    return "\n".join([
        f"\n## Step breakdown: old path, {data.operation} seed {args.seed}, one thread, {args.breakdown_steps} "
        f"steps after {args.warmup} warm-up (load average {load_average()})\n", table, "",
        f"- batches: {batch} x {pad['mean_length']:.2f} tokens on average (the trainer cuts each batch to its "
        f"longest row; max_position {recipe.model.max_position} is never the padded length); padding "
        f"{pad['padding_fraction']:.1%} of the positions computed ({pad['padding_fraction_of_max_position']:.1%} "
        f"of {batch} x {recipe.model.max_position}); loss targets {pad['target_fraction']:.1%} of the positions; "
        f"length-bucketed batches: padding {bucket_pad['padding_fraction']:.2%}",
        f"- FLOPs per step (3 x the forward's matmuls and attention, padding included): {flops / 1e9:.2f} GFLOP; "
        f"achieved {flops / step_ms / 1e6:.1f} GFLOP/s at {step_ms:.1f} ms/step",
        f"- one {rows} x {recipe.model.d_model} @ {recipe.model.d_model} x {recipe.model.d_ff} matmul alone: "
        + ", ".join(f"{dtype} {g:.0f} GFLOP/s" for dtype, g in mm.items()),
        "- forward + backward self CPU time by op family (torch.profiler): "
        + "; ".join(f"{name} {share:.0%}" for name, share in shares.items()),
    ])


# the gated full-length paths of --gate-paths: GroupedTrainer options
GATE_PATHS = {"h": FASTEST, "i": {**FASTEST, "autocast": True}, "h1": FASTEST_SDPA,
              "h1a": {**FASTEST_SDPA, "bucketed": True}}


def fastest_gate(data: TaskData, tokenizer: Any, seed: int, path: str) -> dict[str, Any]:
    """One model trained by ``path`` (a key of :data:`GATE_PATHS`) for the recipe's full schedule, gated."""
    steps = data.recipe.train.steps
    trainer = GroupedTrainer(data, tokenizer, seed, 1, steps, **GATE_PATHS[path])
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=f"path ({path})", mininterval=2.0):
        trainer.step()
    seconds = time.perf_counter() - start
    return {"row": gate_row(steps, gate(trainer.export(0), tokenizer, data.gate_records, data.control)),
            "seconds": seconds}


def repeatable(data: TaskData, tokenizer: Any, steps: int, options: dict[str, Any]) -> str:
    """Whether two trainings of one grouped path (``options`` of :class:`GroupedTrainer`), one
    model from the same seed, each after ``torch._dynamo.reset()`` and with an empty compiler
    cache, give bitwise the same weights after ``steps`` steps; if not, the first step whose
    losses differ."""
    runs = []
    for _ in range(2):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(dir=os.environ["TORCHINDUCTOR_CACHE_DIR"])
        torch._dynamo.reset()
        trainer = GroupedTrainer(data, tokenizer, 0, 1, steps, **options)
        trainer.run(steps)
        runs.append(([w.detach().clone() for w in trainer.model.weights], [loss[0] for loss in trainer.losses]))
    if all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0])):
        return "yes"
    first = next((i for i, (a, b) in enumerate(zip(runs[0][1], runs[1][1])) if a != b), None)
    return "no" + (f" (losses first differ at step {first})" if first is not None else " (losses equal, weights not)")


def fewer_steps_report(args: argparse.Namespace, data: TaskData, tokenizer: Any, old_ms: dict[str, float],
                       setup: dict[str, float]) -> Iterator[str]:
    """The gate along a real run, then (``--short-steps``) a shorter schedule; yields sections."""
    recipe = data.recipe
    steps = recipe.train.steps if args.steps is None else args.steps
    short_steps = 0 if args.short_steps == "auto" else int(args.short_steps)
    if steps:
        trajectory = gate_trajectory(data, tokenizer, args.seed, steps, args.eval_every)
        rows = trajectory["rows"]
        first = next((r["step"] for r in rows if r["valid"]), None)
        stays = next((r["step"] for i, r in enumerate(rows) if all(x["valid"] for x in rows[i:])), None)
        if args.short_steps == "auto" and stays is not None and stays < steps:
            short_steps = stays
        which = data.operation + (" control" if data.control else "")
        yield (f"\n## Fewer steps: the validity gate along one {which} run (train_causal_lm, the recipe's "
               f"{steps}-step schedule, seed {args.seed}; {trajectory['ms']:.1f} ms/step without the evaluations; "
               f"load average {load_average()})\n\n" + format_gate_rows(rows)
               + f"\n\nfirst passing evaluation: step {first}; passing from step {stays} on")
    if short_steps:
        short = short_schedule(data, tokenizer, args.seed, short_steps)
        text = (f"\n## A {short_steps}-step one-cycle schedule, otherwise the recipe ({short['ms']:.1f} ms/step)\n\n"
                + format_gate_rows([short["row"]]))
        if short["row"]["valid"]:
            shared = {op for op, s in zoo_models() if s == recipe.train.steps}
            fewer = projected_zoo_minutes(1.0, old_ms, setup["old"],
                                          steps_of=lambda op, s: short_steps if op in shared else s)
            old = projected_zoo_minutes(1.0, old_ms, setup["old"])
            text += (f"\n\nprojected cold zoo, old path, if every {recipe.train.steps}-step model took "
                     f"{short_steps} steps: {minutes(fewer)} ({args.baseline_minutes * fewer / old:.0f} min on the "
                     f"{args.baseline_minutes:.0f}-minute baseline); only this one model was trained and gated")
        else:
            text += "\n\nthe shorter schedule fails the gate: no projection"
        yield text
    for path in args.gate_paths:
        result = fastest_gate(data, tokenizer, args.seed, path)
        yield (f"\n## Path ({path}), one model, the recipe's {recipe.train.steps} steps "
               f"({result['seconds'] / recipe.train.steps * 1e3:.1f} ms/step with compilation)\n\n"
               + format_gate_rows([result["row"]]))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    # an empty compiler cache: compilation costs what it costs a fresh machine (removed at the end)
    cache = tempfile.mkdtemp(prefix="training-benchmark-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        run(args)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    """Every measurement, printed section by section as it completes."""
    started = time.perf_counter()
    print(f"# Training speed ({datetime.date.today().isoformat()})\n")
    for key, value in cpu_description().items():
        print(f"- {key}: {value}")
    tokenizer = build_word_tokenizer(VOCAB_WORDS)

    # per-model setup: the pairs and their encoding, the old way and the vectorised way
    data = load_task_data(args.operation, args.seed, tokenizer, old_encoding=True, control=args.control)
    start = time.perf_counter()
    fast = encode_pairs_fast(tokenizer, data.pairs)
    fast_seconds = time.perf_counter() - start
    identical = all(torch.equal(a, b) for a, b in zip(fast, data.encoded))
    setup = {"old": data.build_seconds + data.encode_seconds, "fast": data.build_seconds + fast_seconds}
    print("\n" + setup_report(data, tokenizer, fast_seconds, identical))
    if args.check_repeatable:
        for label, options in (("(h), compiled, math attention", FASTEST),
                               ("(h0), not compiled", {**FASTEST, "compile": False}),
                               ("(h1), compiled, SDPA", FASTEST_SDPA),
                               ("(h1) + (a), bucketed", {**FASTEST_SDPA, "bucketed": True})):
            print(f"- path {label}: two trainings of {args.check_repeatable} steps give bitwise the same weights: "
                  f"{repeatable(data, tokenizer, args.check_repeatable, options)}", flush=True)
    if args.trajectory_only:
        args.short_steps, args.gate_paths = "0", []
        for section in fewer_steps_report(args, data, tokenizer, {}, setup):
            print(section, flush=True)
        return
    if args.gate_only:
        args.steps, args.short_steps = 0, "0"
        for section in fewer_steps_report(args, data, tokenizer, {}, setup):
            print(section, flush=True)
        return

    # checks of the replica and of the grouped module
    print(f"- the replica loop gives train_causal_lm's weights bit for bit: {check_replica(data, tokenizer)}")
    if "grouped" not in args.skip:
        for label, options in GROUPED_CHECKS.items():
            c = check_grouped(data, tokenizer, **options)
            print(f"- grouped K=2 ({label}) vs two separate models on the same batches: max |logit diff| at init "
                  f"{c['logit_diff']:.1e}, max |loss diff| over 20 steps {c['loss_diff']:.1e}, "
                  f"max |weight diff| after 20 steps {c['weight_diff']:.1e}")

    print(breakdown_report(args, data, tokenizer, setup), flush=True)

    # candidate paths, interleaved
    total = 2 * args.warmup + max(3, args.warmup // 2) + args.rounds * args.round_steps + 10
    paths = build_paths(data, tokenizer, total, set(args.skip), args.groups, args.fastest_groups)
    measure_rounds(paths, args.rounds, args.round_steps, args.warmup)
    load_after_rounds = load_average()
    old_ms = old_ms_per_operation(DEFAULT_DATASETS, args.seed, tokenizer, max(10, args.round_steps * 2), args.warmup,
                                  {args.operation: data})
    scale = paths[0].ms / old_ms[args.operation]  # each operation's old ms in the reference row's terms
    old_ms = {op: ms * scale for op, ms in old_ms.items()}
    zoo_steps = sum(steps for _, steps in zoo_models())
    print(f"\n## Candidate paths ({args.rounds} interleaved rounds of {args.round_steps} steps each after "
          f"{args.warmup} warm-up; load average after them {load_after_rounds})\n")
    print(f"Cold zoo: {len(zoo_models())} models, {zoo_steps:,} steps, {PROCESSES} processes; old ms/step per "
          "operation (scaled to the reference row): " + ", ".join(f"{op} {ms:.1f}" for op, ms in old_ms.items())
          + f"; setup {setup['old']:.1f} s per model.\n")
    print(report_paths(paths, old_ms, setup, args.operation, args.baseline_minutes), flush=True)

    for section in fewer_steps_report(args, data, tokenizer, old_ms, setup):
        print(section, flush=True)
    print(f"\nload average at the end: {load_average()}; whole run {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
