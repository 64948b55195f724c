"""What storing the pretrained tier's LoRA adapters in float16 changes, and the one-off step that made them.

Adapter version 2 of the MAD and POSER pretrained tiers is version 1's training followed by one
rounding of the adapter's weights to float16 (:func:`harness.zoo.adapters.train_lora_adapter`),
as model version 4 did for the tiny zoo (``benchmarks/zoo_float16.py``). An adapter takes about
an hour of training on 2 cores, so the version-2 adapters are made from the cached version-1
ones: each is rounded and stored under its version-2 key, which is what the version-2 recipe
gives on the machine that trained version 1.

    HARNESS_CACHE=... python benchmarks/adapters_float16.py [--write]

Per adapter it prints the largest adapter weight, the largest logit change the rounding makes
on the merged model (base + adapter, every token of the vocabulary at every position of a
fixed random batch) and the share of positions whose top token changes. ``--write`` stores the
rounded adapters in the cache under their version-2 keys; ``harness run --base`` then finds
them and trains nothing, and ``harness zoo export`` ships them.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import torch

OLD_VERSION, NEW_VERSION = "1", "2"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def version2_key(key: dict) -> dict:
    new = copy.deepcopy(key)
    new["adapter_version"] = NEW_VERSION
    return new


def round_adapter(old_dir: Path, out: Path) -> None:
    """Copy the adapter directory ``old_dir`` into ``out`` with its weights rounded to float16
    (the cache writes ``key.json`` and ``MANIFEST.json`` anew)."""
    from safetensors.torch import load_file, save_file

    from harness.zoo.model import storable_dtype

    for path in old_dir.iterdir():
        if path.name not in ("key.json", "MANIFEST.json", ADAPTER_WEIGHTS):
            shutil.copy2(path, out / path.name)
    tensors = load_file(old_dir / ADAPTER_WEIGHTS)
    dtype = storable_dtype(tensors.items())
    # the metadata peft's save_pretrained writes
    save_file({name: t.to(dtype).contiguous() for name, t in tensors.items()}, out / ADAPTER_WEIGHTS,
              metadata={"format": "pt"})


def logit_change(old_dir: Path, new_dir: Path, n_rows: int = 16, length: int = 16) -> tuple[float, float, float]:
    """(max |logit difference|, max |logit|, share of positions whose argmax changes) between the
    merged float32 adapter and its float16-stored copy, on random token ids."""
    from harness.zoo.store import load_model

    old, _ = load_model(old_dir)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, old.config.vocab_size, (n_rows, length), generator=generator)
    with torch.no_grad():
        a = old(ids).logits
    del old
    new, _ = load_model(new_dir)
    with torch.no_grad():
        b = new(ids).logits
    flips = (a.argmax(-1) != b.argmax(-1)).float().mean().item()
    return (a - b).abs().max().item(), a.abs().max().item(), flips


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="store the rounded adapters in the cache")
    args = parser.parse_args(argv)

    import tempfile

    from safetensors.torch import load_file

    from harness.cache import cache_root
    from harness.zoo.store import cached_model_dir, model_fingerprint, quiet_transformers

    quiet_transformers()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    old_dirs = sorted(p.parent for p in (cache_root() / "models").glob(f"*/{ADAPTER_WEIGHTS}"))
    with tempfile.TemporaryDirectory() as tmp:
        for old_dir in old_dirs:
            key = json.loads((old_dir / "key.json").read_text())
            if key.get("adapter_version") != OLD_VERSION:
                continue
            if args.write:
                new_dir = cached_model_dir(version2_key(key), lambda out, old=old_dir: round_adapter(old, out))
            else:
                new_dir = Path(tmp) / old_dir.name
                new_dir.mkdir()
                round_adapter(old_dir, new_dir)
            max_weight = max(t.abs().max().item() for t in load_file(old_dir / ADAPTER_WEIGHTS).values())
            diff, scale, flips = logit_change(old_dir, new_dir)
            what = key.get("dataset") or key.get("persona")
            rows.append((key["task"], what, key.get("seed"), "control" if "labels" in key else "",
                         model_fingerprint(old_dir, memo=False), model_fingerprint(new_dir, memo=False), max_weight,
                         diff, scale, flips, (new_dir / ADAPTER_WEIGHTS).stat().st_size))
            print("  ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in rows[-1]), flush=True)
    print("task  model  seed  kind  v1 fingerprint  v2 fingerprint  max|w|  max|dlogit|  max|logit|  argmax changed  bytes")
    for row in rows:
        print("  ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row))
    if rows:
        diffs = [r[7] for r in rows]
        print(f"\n{len(rows)} adapters in {time.perf_counter() - start:.0f} s; weights "
              f"{sum(r[10] for r in rows) / 1e6:.1f} MB; max |dlogit| {max(diffs):.3g}; argmax changed at "
              f"{max(r[9] for r in rows):.2%} of positions at most" + ("; stored in the cache" if args.write else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
