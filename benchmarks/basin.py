"""Time the basin engine against the plain tyche-style reference on the same model, data and directions.

Two measurements, each side run once on identical inputs:
1. per-model estimate (``--directions`` directions, KL averaged over the prompts):
   ``estimate_basin`` vs ``reference_basin`` (target: engine >= 10x faster);
2. per-example multipliers (``--mad-examples`` x ``--mad-directions``): ``per_example_basin``
   vs looping the reference over examples (target >= 50x faster); the loop runs on every
   example unless ``--reference-examples`` asks for a linear extrapolation from fewer.
Both sides are warmed up on a few examples first. Prints wall times, speed-ups, forward passes
(model calls and rows) and the agreement of the radii / log volumes.

    python benchmarks/basin.py [--mad OPERATION [--quick] | --model-dir DIR [--prompts FILE]] [--smoke]

``--mad addition`` runs on the MAD task's trained quirky model for that operation (trained and
cached under ``HARNESS_CACHE`` if missing) and its episode's prompts, trusted then test: the
workload of ``basin_mahalanobis``. ``--model-dir`` takes any saved causal LM, with prompts from
``--prompts`` (one per line) or random vocabulary words. Without either a random tiny Llama on
random tokens is used. ``--smoke`` shrinks everything to a few seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from basin_reference import reference_basin, reference_per_example
from harness.basin import estimate_basin, per_example_basin


def build_inputs(args) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    """(model, input_ids, attention_mask, description) for the run."""
    n = max(args.examples, args.mad_examples)
    if args.mad:
        from harness.interfaces import TaskConfig
        from tasks.mad.task import MadTask

        (episode,) = MadTask().episodes(TaskConfig(datasets=[args.mad], quick=args.quick))
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


def timed(fn, *a, **kw):
    start = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - start


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
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    args = parser.parse_args()
    if args.smoke:
        args.examples, args.directions, args.mad_examples, args.mad_directions = 16, 3, 4, 2
        args.hidden, args.seq_len = 32, 6
    torch.set_num_threads(args.threads)

    model, ids, mask, desc = build_inputs(args)
    n_params = sum(p.numel() for p in model.parameters())
    common = dict(eps=args.eps, rtol=args.rtol, layer=args.layer, seed=0)
    print(f"{desc}: {n_params:,} parameters; layer={args.layer}; eps={args.eps}, rtol={args.rtol}; "
          f"{args.threads} thread{'s' if args.threads > 1 else ''}")

    # warm-up (allocator, lazy initialisation, hooks) so that neither side pays it in its timing
    estimate_basin(model, ids[:8], mask[:8], n_directions=2, **common)
    per_example_basin(model, ids[:4], mask[:4], n_directions=2, **common)
    reference_basin(model, ids[:8], mask[:8], n_directions=1, **common)

    x, m = ids[:args.examples], mask[:args.examples]
    eng, t_eng = timed(estimate_basin, model, x, m, n_directions=args.directions, **common)
    ref, t_ref = timed(reference_basin, model, x, m, n_directions=args.directions, **common)
    rel = np.abs(eng.radii / ref.radii - 1)
    print(f"\nper-model estimate: {args.examples} prompts x {args.directions} directions")
    print(f"  reference: {t_ref:8.3f} s  {ref.n_forward:6d} forward calls ({ref.n_rows} rows)  log vol {ref.log_volume:.6g}")
    print(f"  engine   : {t_eng:8.3f} s  {eng.n_forward:6d} forward calls ({eng.n_rows} rows)  log vol {eng.log_volume:.6g}")
    print(f"  speed-up : {t_ref / t_eng:8.1f}x  (target >= 10x); forward calls {ref.n_forward / eng.n_forward:.1f}x fewer")
    print(f"  agreement: radii max rel diff {rel.max():.2e}; log vol diff {abs(eng.log_volume - ref.log_volume):.3g} nats "
          f"(at rtol {args.rtol}; D = {eng.dim:,}: the log-vol error is ~D x the radii error, so the 0.1-nat check is made at tight rtol in tests/harness/test_basin.py); converged {eng.converged.mean():.0%} / {ref.converged.mean():.0%}")

    x, m = ids[:args.mad_examples], mask[:args.mad_examples]
    eng, t_eng = timed(per_example_basin, model, x, m, n_directions=args.mad_directions, **common)
    n_ref = args.reference_examples or args.mad_examples
    n_ref = min(n_ref, args.mad_examples)
    ref, t_ref_part = timed(reference_per_example, model, x[:n_ref], m[:n_ref], n_directions=args.mad_directions, **common)
    scale = args.mad_examples / n_ref
    t_ref = t_ref_part * scale
    rel = np.abs(eng.multipliers[:, :n_ref] / ref.multipliers - 1)
    dvol = np.abs(eng.log_volume[:n_ref] - ref.log_volume)
    print(f"\nper-example multipliers: {args.mad_examples} examples x {args.mad_directions} directions")
    if scale != 1:
        print(f"  reference loop: {t_ref:8.3f} s  {int(ref.n_forward * scale):7d} forward calls "
              f"({int(ref.n_rows * scale)} rows)  EXTRAPOLATED x{scale:g} from {t_ref_part:.3f} s on {n_ref} examples")
    else:
        print(f"  reference loop: {t_ref:8.3f} s  {ref.n_forward:7d} forward calls ({ref.n_rows} rows)  measured on all")
    print(f"  engine        : {t_eng:8.3f} s  {eng.n_forward:7d} forward calls ({eng.n_rows} rows, "
          f"{eng.n_evaluations} lock-step KL calls)")
    print(f"  speed-up      : {t_ref / t_eng:8.1f}x  (target >= 50x)")
    print(f"  agreement on {n_ref} examples: multipliers rel diff median {np.median(rel):.2e}, "
          f"{(rel <= 0.02).mean():.2%} within 2%, max {rel.max():.2e}; per-example log vol diff "
          f"median {np.median(dvol):.3g}, max {dvol.max():.3g} nats; converged {eng.converged.mean():.0%} / "
          f"{ref.converged.mean():.0%}")

if __name__ == "__main__":
    main()
