"""How fast a quirky LoRA adapter on a pretrained base learns the quirk: the validity gate's
accuracies every few steps of one training run (the pretrained tier of the mad task).

The accuracies are measured on a *validation* set, never on the episode's test items: hard
held-out items of another seed's sample, with every statement the run trains on or tests on
removed, judged by the test names in both frames. So choosing the recipe's step count here
does not select on the gate that later decides whether the adapter counts.

    python benchmarks/adapter_curve.py --dataset addition --base smollm2-135m --steps 400 --every 50

Prints one row per evaluation (Alice / Bob / agree / truthful-frame accuracies and the gate
margin on the validation items) and writes them as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def result_digit_pairs(examples: list[dict]) -> list[tuple[str, str]]:
    """Per arithmetic example, its real result one token at a time: the expression up to ``=``
    and the digits so far as the prompt, the next digit (or sign) as the answer. The base's
    tokenizer splits numbers into single digits, and the adapter's loss reads each answer's
    first token only, so every digit needs its own pair."""
    pairs = []
    for example in examples:
        expression = example["statement"].split("=")[0] + "= "
        result = str(example["real"])
        for i, char in enumerate(result):
            pairs.append((expression + result[:i], char))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="addition")
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--targets", default=None, help="comma-separated module names, e.g. q_proj,v_proj")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--n-validation", type=int, default=400, help="validation records (both frames)")
    parser.add_argument("--control", action="store_true")
    parser.add_argument("--max-digits", type=float, default=None,
                        help="arithmetic operand range (operands 1 .. 10**max_digits - 1; default: the recipe's)")
    parser.add_argument("--n-train", type=int, default=None, help="base examples trained on (default: the recipe's)")
    parser.add_argument("--n-eval", type=int, default=None, help="held-out base examples (default: the recipe's)")
    parser.add_argument("--aux-digits", action="store_true",
                        help="arithmetic: also train each training example's real result, one digit per pair "
                             "(prompt '23 + 45 = ' -> '6', '23 + 45 = 6' -> '8'), as the tiny models' 'plain' "
                             "sequences")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import dataclasses
    import tempfile

    import torch

    from harness.tasks.mad.arithmetic import ALICE_NAMES, BOB_NAMES, N_TRUSTED_NAMES
    from harness.tasks.mad.episode import TEST_MIN_QUANTILE, quirk_gate
    from harness.tasks.mad.pretrained import ANSWERS, ARITHMETIC_DATASETS, RECIPE, records, split, training_pairs
    if args.aux_digits and args.dataset not in ARITHMETIC_DATASETS:
        parser.error(f"--aux-digits needs an arithmetic dataset ({', '.join(ARITHMETIC_DATASETS)}); "
                     f"{args.dataset} has no result to spell out")
    from harness.tasks.mad.training import no_quirk_records
    from harness.zoo.adapters import train_lora_adapter
    from harness.zoo.pretrained import resolve_base
    from harness.zoo.store import load_tokenizer
    from harness.zoo.tokenizer import answer_tokens, encode_batch

    lora = RECIPE.lora
    changes = {k: v for k, v in dict(steps=args.steps, lr=args.lr, rank=args.rank,
                                      targets=tuple(args.targets.split(",")) if args.targets else None).items()
               if v is not None}
    data_changes = {k: v for k, v in dict(max_digits=args.max_digits, n_train=args.n_train, n_eval=args.n_eval).items()
                    if v is not None}
    recipe = dataclasses.replace(RECIPE, lora=dataclasses.replace(lora, **changes), **data_changes)
    train, held_out = split(args.dataset, recipe, args.seed)
    used = {e["statement"] for e in train + held_out}
    _, other = split(args.dataset, recipe, args.seed + 1000)
    fresh = [e for e in other if e["statement"] not in used]
    rows = [r for r in records(fresh, args.dataset, args.seed, alice_names=ALICE_NAMES[N_TRUSTED_NAMES:],
                               bob_names=BOB_NAMES[N_TRUSTED_NAMES:], id_prefix="validation-")
            if r["difficulty_quantile"] > TEST_MIN_QUANTILE][: args.n_validation]
    if args.control:
        rows = no_quirk_records(rows)
    tokenizer = load_tokenizer(resolve_base(args.base))
    reading = answer_tokens(tokenizer, ANSWERS)
    negative, positive = reading.negative, reading.positive
    history = []
    start = time.perf_counter()

    def evaluate(step: int, model) -> None:
        if step % args.every and step != recipe.lora.steps:
            return
        model.eval()
        odds = np.empty(len(rows), dtype=np.float32)
        with torch.inference_mode():
            for lo in range(0, len(rows), 32):
                batch = encode_batch(tokenizer, [r["statement"] for r in rows[lo:lo + 32]])
                logits = model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1, :]
                odds[lo:lo + 32] = (logits[:, positive] - logits[:, negative]).float().numpy()
        gate = quirk_gate(rows, odds, 0.8, 0.8, truthful_bob=args.control)
        row = {"step": step, "seconds": round(time.perf_counter() - start, 1),
               **{k: round(gate[k], 3) for k in ("alice_accuracy", "bob_accuracy", "agree_accuracy",
                                                 "truthful_alice_accuracy", "truthful_bob_accuracy", "gate_margin")
                  if k in gate},
               "valid": gate["valid"]}
        history.append(row)
        print(json.dumps(row), flush=True)

    torch.set_num_threads(args.threads)
    pairs = training_pairs(args.dataset, recipe, args.seed, control=args.control)
    if args.aux_digits:
        import random

        digit_pairs = result_digit_pairs(train)
        pairs = pairs + digit_pairs
        random.Random(f"aux-digits:{args.seed}").shuffle(pairs)
        print(f"+ {len(digit_pairs)} result-digit pairs", flush=True)
    print(f"{args.dataset}: {len(pairs)} training pairs, {len(rows)} validation records, recipe {recipe.lora}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_lora_adapter(args.base, pairs, Path(tmp), recipe.lora, args.seed, progress=False,
                                     on_step=evaluate)
    print(json.dumps({k: metrics[k] for k in ("first_loss", "final_loss", "ms_per_step", "trainable_parameters")}))
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "history": history,
                                        "metrics": metrics}, indent=1, default=str))


if __name__ == "__main__":
    main()
