"""Time the shared feature extractor against a bare batched forward pass of the same model.

Both sides see the same prompts in batches of the same size and tokenize inside the timed
region; the extractor additionally returns every layer's residual stream at the answer
position and the answer log-odds. Prints both wall times and their ratio (target <= 1.3).

    python benchmarks/feature_extraction.py [--n 2000] [--batch-size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from harness.features.extractor import FeatureExtractor
from harness.zoo import build_model, build_word_tokenizer
from harness.zoo.store import ModelHandle, configure_process
from harness.tasks.mad.arithmetic import generate_examples, to_records
from harness.tasks.mad.training import RECIPES, VOCAB_WORDS


def bare_forward(model, tokenizer, prompts, batch_size):
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="prompts")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--operation", default="addition")
    args = parser.parse_args()
    configure_process()  # one thread, quiet transformers

    recipe = RECIPES[args.operation]
    examples = generate_examples(args.operation, args.n // 2, seed=0, max_digits=recipe.max_digits)
    prompts = [r["statement"] for r in to_records(examples, args.operation)]
    tokenizer = build_word_tokenizer(VOCAB_WORDS)
    model = build_model(recipe.model, tokenizer, seed=0)  # timing does not depend on the weights
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        handle = ModelHandle(tmp)
        extractor = FeatureExtractor(handle, batch_size=args.batch_size, use_cache=False, progress=False)
        model, tokenizer = handle.model, handle.tokenizer
        bare_forward(model, tokenizer, prompts, args.batch_size)  # warm-up
        extractor.compute(prompts)
        bare, extract = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            bare_forward(model, tokenizer, prompts, args.batch_size)
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            features = extractor.compute(prompts)
            extract.append(time.perf_counter() - start)
    bare_s, extract_s = statistics.median(bare), statistics.median(extract)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.operation} recipe, {n_params:,} parameters, {features.n_layers} layers; "
          f"{len(prompts)} prompts, batch {args.batch_size}, 1 thread, median of {args.repeats}")
    print(f"bare batched forward : {bare_s:.3f} s")
    print(f"feature extraction   : {extract_s:.3f} s  (hidden {features.hidden.shape}, log-odds {features.logodds.shape})")
    print(f"ratio extraction/bare: {extract_s / bare_s:.2f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
