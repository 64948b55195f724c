"""What a per-example basin sweep costs on a pretrained model, per perturbed parameter set.

For one model directory (a base + LoRA adapter of the mad task's pretrained tier, or any HF
folder) and real prompts of a pretrained mad dataset, it measures for each parameter set
(every weight, one middle block, the last block):

* D, the perturbed dimension, and the cost of one lock-step KL evaluation (every example x
  every direction at a fixed scale, hooked passes), with and without reusing the unperturbed
  blocks before the first perturbed one (``CausalLMKL(reuse_prefix=...)``), in ms per row;
* that both ways give the same KLs;
* a real ``per_example_basin`` on the first ``--search-items`` prompts with the last block: its
  KL evaluations per (direction, example), converged share and wall time;
* the projected wall time of a full sweep of ``--project-items`` items at ``--directions``.

    python benchmarks/basin_pretrained.py --model-dir $HARNESS_CACHE/models/<key> --dataset hemisphere

One torch thread (as a job worker has). Peak resident memory is the process's maximum.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch


def _prompts(dataset: str, n: int, seed: int) -> list[str]:
    from harness.tasks.mad.pretrained import RECIPE, records, split

    _, held_out = split(dataset, RECIPE, seed)
    return [r["statement"] for r in records(held_out, dataset, seed)][:n]


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--dataset", default="hemisphere")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=32, help="examples per timed KL evaluation")
    parser.add_argument("--directions", type=int, default=16)
    parser.add_argument("--search-items", type=int, default=32)
    parser.add_argument("--project-items", type=int, default=1498, help="trusted + test items of an episode")
    parser.add_argument("--layers", default="all,15,-1", help="parameter sets: all, or block indices (0-based)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from harness.basin import per_example_basin
    from harness.basin.kl import CausalLMKL
    from harness.basin import prior_terms
    from harness.zoo.store import load_model
    from harness.zoo.tokenizer import encode_batch

    model, tokenizer = load_model(args.model_dir)
    model.eval()
    prompts = _prompts(args.dataset, max(args.rows, args.search_items), args.seed)
    batch = encode_batch(tokenizer, prompts)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    print(f"{len(prompts)} prompts of {args.dataset}, {ids.shape[1]} columns; peak so far {_peak_gib():.2f} GiB")
    rows = torch.arange(args.rows)
    report: dict = {"model_dir": str(args.model_dir), "dataset": args.dataset, "sets": []}
    for spec in args.layers.split(","):
        layer = None if spec == "all" else int(spec)
        subset, _, dirs, *_ = prior_terms(model, layer, args.directions, 0, None, None)
        entry: dict = {"layer": spec, "dim": subset.dim}
        kls = {}
        for reuse in (False, True):
            t0 = time.perf_counter()
            kl = CausalLMKL(model, ids[rows], mask[rows], subset, dirs, batch_size=64, reuse_prefix=reuse)
            setup = time.perf_counter() - t0
            scales = torch.full((args.directions, len(rows)), 0.5, dtype=torch.float64)
            t0 = time.perf_counter()
            kls[reuse] = kl.per_example(scales)
            wall = time.perf_counter() - t0
            ms = 1000 * wall / (args.directions * len(rows))
            entry["reuse_prefix" if reuse else "full"] = {"setup_s": round(setup, 2), "ms_per_row": round(ms, 2),
                                                          "prefix_block": kl.prefix_block}
            print(f"  layer {spec:>4} D={subset.dim:>11,} reuse_prefix={reuse!s:5} prefix_block={kl.prefix_block:>2} "
                  f"setup {setup:6.1f} s  {ms:7.1f} ms/row  peak {_peak_gib():.2f} GiB", flush=True)
        diff = (kls[True] - kls[False]).abs().max().item()
        entry["max_kl_difference"] = diff
        entry["speedup"] = round(entry["full"]["ms_per_row"] / entry["reuse_prefix"]["ms_per_row"], 2)
        print(f"  layer {spec:>4}: max |KL difference| {diff:.2e}, speed-up {entry['speedup']}x")
        report["sets"].append(entry)
        # the search below runs on the last parameter set listed
        last_layer, ms_per_row_last = layer, entry["reuse_prefix"]["ms_per_row"]

    n = args.search_items
    t0 = time.perf_counter()
    result = per_example_basin(model, ids[:n], mask[:n], n_directions=args.directions, layer=last_layer, batch_size=64)
    wall = time.perf_counter() - t0
    per_search = float(result.evaluations.mean())
    converged = float(result.converged.mean())
    projected = args.project_items * args.directions * per_search * ms_per_row_last / 1000
    report["search"] = {"items": n, "layer": last_layer, "wall_s": round(wall, 1), "evaluations_per_search": per_search,
                        "converged": converged, "projected_sweep_s": round(projected), "project_items": args.project_items}
    report["peak_rss_gib"] = round(_peak_gib(), 2)
    print(f"per_example_basin, {n} items x {args.directions} directions, layer {last_layer}: {wall:.1f} s, "
          f"{per_search:.2f} KL evaluations per search, converged {converged:.3f}")
    print(f"projected sweep of {args.project_items} items: {projected / 60:.1f} min; peak {_peak_gib():.2f} GiB")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
