"""What storing the tiny models in float16 changes, and the one-off step that made the float16 zoo.

Model version 4 of the MAD task and of the POSER personas is version 3's training followed by
one rounding of every weight to float16 (:func:`harness.zoo.model.save_trained_model`). The
version-3 zoo was trained on other machines (an AMD EPYC, an H200), and a model retrained here
would be a different model (docs/reproducing-models.md). So the version-4 zoo is made from the
version-3 archive itself: each model is loaded, rounded and stored under its version-4 key,
which is what the version-4 recipe gives on the machines that trained version 3.

    git show <rev>:leaderboard/zoo/harness-zoo-<hash>.tar.gz > /tmp/zoo-v3.tar.gz
    python benchmarks/zoo_float16.py /tmp/zoo-v3.tar.gz [--write]

Per model it prints the largest weight, the largest logit change the rounding makes on the
model's own vocabulary (every token at every position of a fixed random batch) and the share
of positions whose top token changes. ``--write`` stores the rounded models in the cache
(``HARNESS_CACHE``) under their version-4 keys; ``harness run`` then finds them and trains
nothing, and ``harness zoo export`` ships them.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

NEW_VERSION = "4"


def version4_key(key: dict) -> dict:
    """The version-4 key of a version-3 MAD model or POSER persona (their one version field)."""
    new = copy.deepcopy(key)
    field = "model_version" if key.get("task") == "mad" else "version"
    if key.get(field) != "3":
        raise SystemExit(f"not a version-3 model key: {key.get('task')} {field}={key.get(field)!r}")
    new[field] = NEW_VERSION
    return new


def logit_change(old_dir: Path, new_dir: Path, n_rows: int = 64, length: int = 16) -> tuple[float, float, float]:
    """(max |logit difference|, max |logit|, share of positions whose argmax changes) between the
    float32 model and its float16-stored copy (loaded into float32), on random token ids."""
    from transformers import AutoModelForCausalLM

    old = AutoModelForCausalLM.from_pretrained(old_dir, dtype=torch.float32).eval()
    new = AutoModelForCausalLM.from_pretrained(new_dir, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, old.config.vocab_size, (n_rows, length), generator=generator)
    with torch.no_grad():
        a, b = old(ids).logits, new(ids).logits
    flips = (a.argmax(-1) != b.argmax(-1)).float().mean().item()
    return (a - b).abs().max().item(), a.abs().max().item(), flips


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path, help="a version-3 harness zoo archive")
    parser.add_argument("--write", action="store_true", help="store the rounded models in the cache")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.zoo.model import save_trained_model
    from harness.zoo.store import cached_model_dir, model_fingerprint, quiet_transformers

    quiet_transformers()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(args.archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        manifest = json.loads((Path(tmp) / "zoo-manifest.json").read_text())
        for entry in manifest["models"]:
            old_dir = Path(tmp) / entry["namespace"] / entry["key_hash"]
            key = json.loads((old_dir / "key.json").read_text())
            new_key = version4_key(key)

            def build(out: Path, old_dir: Path = old_dir) -> None:
                model = AutoModelForCausalLM.from_pretrained(old_dir, dtype=torch.float32)
                save_trained_model(model, AutoTokenizer.from_pretrained(old_dir), out)
                shutil.copy2(old_dir / "train_metrics.json", out / "train_metrics.json")

            if args.write:
                new_dir = cached_model_dir(new_key, build, namespace=entry["namespace"])
            else:
                new_dir = Path(tmp) / "rounded" / entry["key_hash"]
                new_dir.mkdir(parents=True)
                build(new_dir)
            weights = AutoModelForCausalLM.from_pretrained(old_dir, dtype=torch.float32).state_dict().values()
            max_weight = max(w.abs().max().item() for w in weights)
            diff, scale, flips = logit_change(old_dir, new_dir)
            label = key.get("operation") or key.get("persona")
            rows.append((key["task"], label, key.get("seed"), "control" if "labels" in key else "",
                         entry["fingerprint"], model_fingerprint(new_dir, memo=False), max_weight, diff, scale, flips,
                         (new_dir / "model.safetensors").stat().st_size))
    print("task  model  seed  kind  v3 fingerprint  v4 fingerprint  max|w|  max|dlogit|  max|logit|  argmax changed  bytes")
    for row in rows:
        print("  ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row))
    diffs = [r[7] for r in rows]
    flips = [r[9] for r in rows]
    print(f"\n{len(rows)} models in {time.perf_counter() - start:.0f} s; weights {sum(r[10] for r in rows) / 1e6:.1f} MB; "
          f"max |dlogit| {max(diffs):.3g} (median {sorted(diffs)[len(diffs) // 2]:.3g}); "
          f"argmax changed at {max(flips):.2%} of positions at most, {sum(flips) / len(flips):.3%} on average"
          + ("; stored in the cache" if args.write else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
