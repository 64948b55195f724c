"""Research-size model on this machine: time and peak memory of extraction and detectors.

Builds a randomly initialised Llama of about 308M parameters (24 layers, width 1024, MLP
2816; the MAD word tokenizer), ``save_pretrained`` into the cache (no hub), writes a quirky
dataset in the published format (512 hard test items; a 32-item one for basin), and runs each
measurement in a fresh process so its peak resident memory is its own:

- feature extraction of one layer and of every layer, and a bare batched forward pass over
  the same batches (the ratio extraction / bare is the extractor's overhead);
- ``harness run --task mad --option model=DIR --option dataset=FILE`` with
  activations_mahalanobis, attribution_mahalanobis_mean, and basin_volume on one block with a
  reduced setting (32 test items, 5 directions);
- each with ``--dtype float32`` and ``--dtype bfloat16`` (``--device`` as given).

    python benchmarks/scale.py [--device cpu] [--dtypes float32 bfloat16] [--only extract_one ...]

Prints one table row per measurement: wall seconds, peak RSS, and the issue's memory budget
(model bytes + 2 GB for extraction and activation detectors, + 4 GB for attribution, + 3 x the
perturbed block's bytes for basin). Random weights: the scores mean nothing, the costs do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_LAYERS, WIDTH, MLP, HEADS = 24, 1024, 2816, 16
BASIN_BLOCK = 12  # hidden-state index of the perturbed block's output (harness.layers)
GIB = 1024 ** 3


def model_dir() -> Path:
    """The benchmark model in the cache (``benchmarks/`` namespace), built once."""
    from harness.zoo.store import cached_model_dir

    key = {"benchmark": "scale", "layers": N_LAYERS, "width": WIDTH, "mlp": MLP, "heads": HEADS, "seed": 0}
    return cached_model_dir(key, build_model, namespace="benchmarks")


def build_model(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.zoo import build_word_tokenizer
    from harness.tasks.mad.training import VOCAB_WORDS

    tokenizer = build_word_tokenizer(VOCAB_WORDS)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=MLP,
                         num_hidden_layers=N_LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def dataset(path: Path, n_test: int) -> Path:
    """A JSONL quirky dataset with exactly ``n_test`` hard test items and 128 trusted ones."""
    from harness.tasks.mad.arithmetic import generate_examples, to_records

    if path.exists():
        return path
    records = to_records(generate_examples("addition", 4 * n_test, seed=0, max_digits=2.0), "addition")
    test = [r for r in records if r["difficulty_quantile"] > 0.75][:n_test]
    trusted = [r for r in records if r["difficulty_quantile"] < 0.25 and r["character"] == "Alice"][:128]
    path.write_text("".join(json.dumps(r) + "\n" for r in trusted + test))
    return path


def measured(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and peak RSS of ``command`` run alone in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_gib": peak_kib / 1024 ** 2, "stdout": done.stdout}


def worker(args: argparse.Namespace) -> None:
    """In a fresh process: one extraction or one bare forward pass; prints its own seconds."""
    import torch

    from harness import runtime
    from harness.features.extractor import FeatureExtractor, last_logits_only, length_sorted_batches
    from harness.zoo.store import ModelHandle, configure_process
    from harness.zoo.tokenizer import encode_batch

    settings = runtime.Runtime(device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    runtime.use(settings)
    configure_process(settings.resolved_device())
    prompts = [json.loads(line)["statement"] for line in Path(args.data).read_text().splitlines()]
    handle = ModelHandle(Path(args.model))
    model, tokenizer = handle.model, handle.tokenizer
    start = time.perf_counter()
    if args.worker == "bare":
        with torch.inference_mode():
            for index in length_sorted_batches(tokenizer, prompts, args.batch_size):
                batch = {k: v.to(handle.input_device) for k, v in encode_batch(tokenizer, [prompts[i] for i in index]).items()}
                model(**batch, use_cache=False, **last_logits_only(model)).logits[:, -1].float().cpu()
    else:
        extractor = FeatureExtractor(handle, batch_size=args.batch_size, use_cache=False, progress=False)
        layers = [N_LAYERS // 2] if args.worker == "extract_one" else list(range(N_LAYERS + 1))
        extractor.layers(prompts, layers)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("HARNESS_TORCH_THREADS", "1")))
    parser.add_argument("--only", nargs="+", help="measurements to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", choices=("bare", "extract_one", "extract_all"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from harness.zoo.store import count_parameters, model_config

    model = model_dir()
    n_params = count_parameters(model)
    work = Path(tempfile.mkdtemp(prefix="harness-scale-"))
    data = dataset(work / "addition.jsonl", 512)
    small = dataset(work / "addition-32.jsonl", 32)
    env = {**os.environ, "HARNESS_TORCH_THREADS": str(args.threads)}
    block_params = 4 * WIDTH * WIDTH + 3 * WIDTH * MLP + 2 * WIDTH
    print(f"model: random-init Llama, {N_LAYERS} layers, width {WIDTH}, {n_params:,} parameters; "
          f"{model_config(model).get('vocab_size')} tokens; device {args.device}; {args.threads} torch thread(s); "
          f"batch {args.batch_size}; load average {os.getloadavg()[0]:.1f}")
    rows = []
    harness = [sys.executable, "-m", "harness.cli", "run", "--task", "mad", "--option", f"model={model}",
               "--no-leaderboard", "--allow-invalid", "--device", args.device, "--batch-size", str(args.batch_size)]
    for dtype in args.dtypes:
        model_bytes = n_params * (4 if dtype == "float32" else 2)
        bare = None
        plan = [
            ("bare", "bare forward (512 items)", None, 0),
            ("extract_one", "extract 1 layer (512 items)", None, 2 * GIB),
            ("extract_all", "extract all 25 hidden states (512 items)", None, 2 * GIB),
            ("activations_mahalanobis", "activations_mahalanobis (512 items)", [], 2 * GIB),
            ("attribution_mahalanobis_mean", "attribution_mahalanobis_mean (512 items)", [], 4 * GIB),
            ("basin_volume", f"basin_volume, block {BASIN_BLOCK}, 5 directions, 32 items",
             ["--param", "basin_volume.n_directions=5", "--param", f"basin_volume.layer={BASIN_BLOCK}"],
             3 * block_params * (4 if dtype == "float32" else 2)),
        ]
        for name, label, extra, budget in plan:
            if args.only and name not in args.only:
                continue
            cache = work / f"cache-{dtype}-{name}"  # cold: nothing extracted before
            run_env = {**env, "HARNESS_CACHE": str(cache)}
            if extra is None:
                command = [sys.executable, __file__, "--worker", name, "--model", str(model), "--data", str(data),
                           "--dtype", dtype, "--device", args.device, "--batch-size", str(args.batch_size)]
            else:
                command = [*harness, "--option", f"dataset={small if name == 'basin_volume' else data}",
                           "--dtype", dtype, "--detector", name, *extra, "--results-dir", str(work / "records")]
            result = measured(command, run_env)
            seconds = json.loads(result["stdout"].strip().splitlines()[-1])["seconds"] if extra is None else None
            if name == "bare":
                bare = seconds
            row = {"dtype": dtype, "measurement": label, "wall_s": round(result["wall_s"], 1),
                   "compute_s": None if seconds is None else round(seconds, 1),
                   "vs_bare": None if seconds is None or not bare or name == "bare" else round(seconds / bare, 2),
                   "peak_gib": round(result["peak_gib"], 2),
                   "budget_gib": round((model_bytes + budget) / GIB, 2) if budget else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| dtype | measurement | wall s | compute s | / bare | peak RSS GiB | budget GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['measurement']} | {r['wall_s']} | {r['compute_s'] or ''} | {r['vs_bare'] or ''} "
              f"| {r['peak_gib']} | {r['budget_gib'] or ''} |")


if __name__ == "__main__":
    main()
