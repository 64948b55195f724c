"""The reference models that ship with the repository, and how a run uses them.

Trained weights depend on the machine (docs/reproducing-models.md), so the leaderboard's own
models are committed as one ``harness zoo`` archive per page of the leaderboard
(:data:`harness.records.BOARDS`, relative to the working directory like ``leaderboard/models.json``):
``leaderboard/zoo/harness-zoo-<hash>.tar.gz`` holds the tiny models and
``leaderboard/pretrained/zoo/harness-zoo-<hash>.tar.gz`` the pretrained tier's LoRA adapters
(their base is not shipped: ``harness setup`` puts it in the cache). Before training anything,
:func:`harness.zoo.sources.build_models` asks :func:`import_shipped` whether an archive holds
the missing models: if one does, it is checked and unpacked into the cache
(:func:`harness.zoo.archive.import_zoo`) and nothing is trained, so a fresh clone scores the
leaderboard's exact models. ``harness run --no-shipped-zoo`` and ``harness zoo retrain`` train
instead.

``harness leaderboard --check`` calls :func:`check_shipped` for each page: its archive's models
must be exactly the models its records were computed on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Optional

from harness.cache import PathLike, stable_hash
from harness.zoo.archive import ZooArchiveError, import_zoo, model_label, read_manifest

logger = logging.getLogger(__name__)

DEFAULT_ZOO_DIR = Path("leaderboard") / "zoo"
# the zoo/ of each page of harness.records.BOARDS (models may not import records: the layers)
SHIPPED_ZOO_DIRS = (DEFAULT_ZOO_DIR, Path("leaderboard") / "pretrained" / "zoo")
ARCHIVE_GLOB = "harness-zoo-*.tar.gz"


def shipped_archive(zoo_dir: PathLike = DEFAULT_ZOO_DIR) -> Optional[Path]:
    """The one archive in ``zoo_dir``; ``None`` when there is none (e.g. outside a checkout).
    Two or more raise ZooArchiveError: which of them the leaderboard used would be a guess."""
    archives = sorted(Path(zoo_dir).glob(ARCHIVE_GLOB))
    if len(archives) > 1:
        raise ZooArchiveError(f"{zoo_dir} holds {len(archives)} zoo archives ({', '.join(a.name for a in archives)}); "
                              "the leaderboard's models are one archive: delete the stale ones")
    return archives[0] if archives else None


def import_shipped(keys: Iterable[dict[str, Any]],
                   zoo_dirs: Iterable[PathLike] = SHIPPED_ZOO_DIRS) -> tuple[int, list[Path]]:
    """Check and import into the cache every shipped archive (one per directory of ``zoo_dirs``)
    that holds any of the model ``keys``; returns ``(models imported, those archives)``;
    ``(0, [])`` when no archive holds any of them."""
    wanted = {stable_hash(key) for key in keys}
    imported, used = 0, []
    for zoo_dir in zoo_dirs:
        archive = shipped_archive(zoo_dir)
        if archive is None or not wanted & {entry["key_hash"] for entry in read_manifest(archive)["models"]}:
            continue
        report = import_zoo(archive)
        logger.info("imported %d models from %s (%d already present)", len(report.imported), archive,
                    len(report.already_present))
        imported += len(report.imported)
        used.append(archive)
    return imported, used


def archive_fingerprints(archive: PathLike) -> dict[str, str]:
    """Model fingerprint -> a short description (task, dataset, seed) of every model of ``archive``."""
    return {entry["fingerprint"]: model_label(entry["key"]) for entry in read_manifest(archive)["models"]}


def check_shipped(models_file: PathLike, zoo_dir: PathLike = DEFAULT_ZOO_DIR) -> list[str]:
    """Problems (one line each) between the leaderboard's ``models.json`` and its shipped archive:
    a model the records were computed on that the archive lacks, or a model the archive ships
    that no record uses. No ``models.json`` or no archive: nothing to compare, no problem."""
    models_file = Path(models_file)
    try:
        archive = shipped_archive(zoo_dir)
    except ZooArchiveError as exc:
        return [str(exc)]
    if archive is None or not models_file.is_file():
        return []
    entries = json.loads(models_file.read_text()).get("models", [])
    used = {fp: f"{e['task']} {e['dataset']} seed {e['seed']} {role}"
            for e in entries for role, fp in e.get("model_fingerprints", {}).items()}
    try:
        shipped = archive_fingerprints(archive)
    except ZooArchiveError as exc:
        return [str(exc)]
    problems = [f"the records use model {fp} ({what}), which {archive} does not hold: export the models "
                "the records were computed on (`harness zoo export leaderboard/zoo --records leaderboard/records`) "
                "and delete the old archive" for fp, what in sorted(used.items()) if fp not in shipped]
    problems += [f"{archive} ships model {fp} ({what}), which no leaderboard record uses: re-export the archive "
                 "from the records" for fp, what in sorted(shipped.items()) if fp not in used]
    return problems
