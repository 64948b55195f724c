"""Time the basin engine against tyche's algorithm on the same model, data and directions.

Two references (``benchmarks/basin_reference.py``), both tyche's doubling-and-bisection search
one direction (and, per example, one example) at a time:
* ``tyche cache``: tyche's ``cache_mode``, the unperturbed log-probs computed once per call
  (the reference the targets are stated against);
* ``tyche plain``: tyche's default, the unperturbed outputs recomputed at every evaluation.
Two measurements, every side run once on identical inputs, in the same process:
1. per-model estimate (``--directions`` directions, KL averaged over the prompts):
   ``estimate_basin`` vs ``reference_basin`` (target: engine >= 3x tyche cache on the trained
   MAD addition model);
2. per-example multipliers (``--mad-examples`` x ``--mad-directions``): ``per_example_basin``
   vs looping the reference over examples (target >= 30x tyche cache); the loops run on every
   example unless ``--reference-examples`` asks for a linear extrapolation from fewer.
All sides are warmed up on a few examples first. Prints CPU and wall times (the CPU time of
this one-thread process is the fair comparison on a shared machine), speed-ups against both
references, forward passes (model calls and rows), the agreement of the radii (target: within
1% of the reference) and the machine's load average at the start and the end.

Threads: ``--threads`` (default 1, the harness's policy on 2-core machines) applies to every
side. ``--engine-threads N`` gives the engine alone N threads, for the comparison of each side
at its best setting on an idle machine: the reference's one-row passes gain nothing from a
second thread (they lose wall time to it), the engine's batched passes do. Compare wall times
then: CPU time counts every thread.

    python benchmarks/basin.py [--mad OPERATION [--quick] | --model-dir DIR [--prompts FILE]] [--smoke]

``--mad addition`` runs on the MAD task's trained quirky model for that operation (trained and
cached under ``HARNESS_CACHE`` if missing) and its episode's prompts, trusted then test: the
workload of ``basin_mahalanobis``. ``--model-dir`` takes any saved causal LM, with prompts from
``--prompts`` (one per line) or random vocabulary words. Without either a random tiny Llama on
random tokens is used. ``--smoke`` shrinks everything to a few seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from basin_reference import reference_basin, reference_per_example
from harness.basin import estimate_basin, per_example_basin


def build_inputs(args) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    """(model, input_ids, attention_mask, description) for the run."""
    n = max(args.examples, args.mad_examples)
    if args.mad:
        from harness.interfaces import RunContext
        from harness.tasks.mad.task import MadTask

        (episode,) = MadTask().episodes(RunContext(datasets=[args.mad], quick=args.quick))
        handle = episode.test.handle
        prompts = list(episode.trusted.prompts) + list(episode.test.prompts)
        if len(prompts) < n:
            raise SystemExit(f"the {args.mad} episode has {len(prompts)} prompts; {n} needed")
        enc = handle.tokenizer(prompts[:n], return_tensors="pt", padding=True)
        quick = " (quick recipe)" if args.quick else ""
        return handle.model, enc["input_ids"], enc["attention_mask"], f"trained MAD {args.mad} model{quick}, episode prompts"
    if args.model_dir:
        from harness.zoo.store import load_model

        model, tokenizer = load_model(args.model_dir)
        if args.prompts:
            prompts = [line for line in Path(args.prompts).read_text().splitlines() if line.strip()]
        else:
            gen = np.random.default_rng(0)
            vocab = sorted(tokenizer.get_vocab())  # sorted: get_vocab's order is not stable across runs
            words = [w for w in vocab if w.isalnum()] or vocab
            prompts = [" ".join(gen.choice(words, size=args.seq_len)) for _ in range(n)]
        prompts = (prompts * (n // len(prompts) + 1))[:n]
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        desc = f"model {args.model_dir}"
        return model, enc["input_ids"], enc["attention_mask"], desc
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 64, (n, args.seq_len), generator=gen)
    return model, ids, torch.ones_like(ids), f"random tiny Llama (hidden {args.hidden}, {args.layers} layers)"


class Timing(NamedTuple):
    """CPU seconds of this process (the comparison on a shared machine: other processes' load
    stretches wall time, not CPU time, with one torch thread) and wall seconds."""

    cpu: float
    wall: float

    def __mul__(self, k: float) -> "Timing":
        return Timing(self.cpu * k, self.wall * k)

    def __str__(self) -> str:
        return f"cpu {self.cpu:8.2f} s (wall {self.wall:8.2f} s)"

    def ratio(self, other: "Timing") -> str:
        """How many times ``other`` (the engine) is faster: CPU time, then wall time."""
        return f"{self.cpu / other.cpu:.1f}x cpu ({self.wall / other.wall:.1f}x wall)"


def timed(fn, *a, **kw) -> tuple[object, Timing]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*a, **kw)
    return out, Timing(time.process_time() - cpu, time.perf_counter() - wall)


def load() -> str:
    """The 1/5/15-minute load averages and the core count (timings on a shared machine)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def agreement(engine: np.ndarray, reference: np.ndarray) -> str:
    rel = np.abs(engine / reference - 1)
    return (f"rel diff median {np.median(rel):.2e}, max {rel.max():.2e}, "
            f"{(rel <= 0.01).mean():.1%} within 1%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mad", metavar="OPERATION", help="the MAD task's trained model and prompts for OPERATION")
    parser.add_argument("--quick", action="store_true", help="with --mad: the quick recipe's model")
    parser.add_argument("--model-dir", help="saved HF causal LM (default: random tiny Llama)")
    parser.add_argument("--prompts", help="text file, one prompt per line")
    parser.add_argument("--examples", type=int, default=256, help="prompts for the per-model estimate")
    parser.add_argument("--directions", type=int, default=25)
    parser.add_argument("--mad-examples", type=int, default=512)
    parser.add_argument("--mad-directions", type=int, default=16)
    parser.add_argument("--reference-examples", type=int, default=0,
                        help="time the per-example reference loop on only this many examples and scale it "
                             "linearly to --mad-examples (its examples are independent); 0 = all (default)")
    parser.add_argument("--eps", type=float, default=1e-2)
    parser.add_argument("--rtol", type=float, default=1e-2)
    parser.add_argument("--layer", type=int, default=None, help="one decoder block (default: all parameters)")
    parser.add_argument("--seq-len", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (default 1: steadier timings; the machine's cores "
                             "favour the engine, whose batches parallelise, over the reference's one-row passes)")
    parser.add_argument("--engine-threads", type=int, default=None,
                        help="torch threads for the engine alone (default: --threads); compare wall times then")
    parser.add_argument("--part", choices=("both", "per-model", "per-example"), default="both",
                        help="run only one of the two measurements (default both)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    args = parser.parse_args()
    if args.smoke:
        args.examples, args.directions, args.mad_examples, args.mad_directions = 16, 3, 4, 2
        args.hidden, args.seq_len = 32, 6
    args.engine_threads = args.engine_threads or args.threads
    torch.set_num_threads(args.threads)

    model, ids, mask, desc = build_inputs(args)
    n_params = sum(p.numel() for p in model.parameters())
    common = dict(eps=args.eps, rtol=args.rtol, layer=args.layer, seed=0)
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
    if args.engine_threads != args.threads:
        threads = f"references {threads}, engine {args.engine_threads} (compare wall times)"
    print(f"{desc}: {n_params:,} parameters; layer={args.layer}; eps={args.eps}, rtol={args.rtol}; {threads}")

    # warm-up (allocator, lazy initialisation, hooks, thread pool) so that no side pays it in its timing
    with engine_threads(args):
        estimate_basin(model, ids[:8], mask[:8], n_directions=2, **common)
        per_example_basin(model, ids[:4], mask[:4], n_directions=2, **common)
    reference_basin(model, ids[:8], mask[:8], n_directions=1, **common)

    print(f"start: {load()}")
    if args.part != "per-example":
        per_model(args, model, ids, mask, common)
        print(f"after the per-model runs: {load()}")
    if args.part != "per-model":
        per_example(args, model, ids, mask, common)
    print(f"end: {load()}")


@contextlib.contextmanager
def engine_threads(args) -> Iterator[None]:
    """The engine's torch thread count within the block, the references' outside it."""
    torch.set_num_threads(args.engine_threads)
    try:
        yield
    finally:
        torch.set_num_threads(args.threads)


def per_model(args, model, ids, mask, common) -> None:
    """Measurement 1: the per-model estimate against both references."""
    x, m = ids[:args.examples], mask[:args.examples]
    with engine_threads(args):
        eng, t_eng = timed(estimate_basin, model, x, m, n_directions=args.directions, **common)
    cached, t_cached = timed(reference_basin, model, x, m, n_directions=args.directions, cache=True, **common)
    plain, t_plain = timed(reference_basin, model, x, m, n_directions=args.directions, **common)
    print(f"\nper-model estimate: {args.examples} prompts x {args.directions} directions")
    for label, res, t in (("tyche cache", cached, t_cached), ("tyche plain", plain, t_plain), ("engine", eng, t_eng)):
        print(f"  {label:<12}: {t}  {res.n_forward:6d} forward calls ({res.n_rows} rows)  log vol {res.log_volume:.6g}")
    print(f"  speed-up   : {t_cached.ratio(t_eng)} vs tyche cache (target >= 3x on the trained addition model), "
          f"{t_plain.ratio(t_eng)} vs tyche plain")
    print(f"  agreement  : radii vs tyche cache {agreement(eng.radii, cached.radii)}; log vol diff "
          f"{abs(eng.log_volume - cached.log_volume):.3g} nats (at rtol {args.rtol}; D = {eng.dim:,}: the log-vol "
          f"error is ~D x the radii error, so the 0.1-nat check is made at tight rtol in tests/harness/test_basin.py); "
          f"converged {eng.converged.mean():.0%} / {cached.converged.mean():.0%}")



def per_example(args, model, ids, mask, common) -> None:
    """Measurement 2: per-example multipliers against both reference loops."""
    x, m = ids[:args.mad_examples], mask[:args.mad_examples]
    with engine_threads(args):
        eng, t_eng = timed(per_example_basin, model, x, m, n_directions=args.mad_directions, **common)
    n_ref = min(args.reference_examples or args.mad_examples, args.mad_examples)
    scale = args.mad_examples / n_ref
    print(f"\nper-example multipliers: {args.mad_examples} examples x {args.mad_directions} directions")
    refs = {}
    for label, cache in (("tyche cache", True), ("tyche plain", False)):
        ref, t_part = timed(reference_per_example, model, x[:n_ref], m[:n_ref], n_directions=args.mad_directions,
                            cache=cache, **common)
        refs[label] = (ref, t_part * scale)
        how = f"EXTRAPOLATED x{scale:g} from {t_part} on {n_ref} examples" if scale != 1 else "measured on all"
        print(f"  {label:<12}: {t_part * scale}  {int(ref.n_forward * scale):7d} forward calls "
              f"({int(ref.n_rows * scale)} rows)  {how}")
    print(f"  engine      : {t_eng}  {eng.n_forward:7d} forward calls ({eng.n_rows} rows, "
          f"{eng.n_evaluations} lock-step KL calls)")
    (cached, t_cached), (plain, t_plain) = refs["tyche cache"], refs["tyche plain"]
    print(f"  speed-up    : {t_cached.ratio(t_eng)} vs tyche cache (target >= 30x), {t_plain.ratio(t_eng)} vs tyche plain")
    dvol = np.abs(eng.log_volume[:n_ref] - cached.log_volume)
    print(f"  agreement on {n_ref} examples: multipliers vs tyche cache {agreement(eng.multipliers[:, :n_ref], cached.multipliers)}; "
          f"per-example log vol diff median {np.median(dvol):.3g}, max {dvol.max():.3g} nats; converged "
          f"{eng.converged.mean():.1%} / {cached.converged.mean():.1%}")

if __name__ == "__main__":
    main()
