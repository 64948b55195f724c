"""The ``harness`` command line: run, list, plugins, leaderboard.

Exit codes: 0 success; 1 some job failed (its error record is written); 2 a usage error
(unknown task or detector name, bad configuration), with the valid choices named.
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run detectors on a task and store one record per job")
    run.add_argument("--task", required=True, help="task name (see `harness list`)")
    run.add_argument("--detector", action="append", required=True, help="detector name; repeatable; 'all' for every one")
    run.add_argument("--seed", type=int, default=0, help="seed of data, models and detectors (default 0)")
    run.add_argument("--quick", action="store_true", default=os.environ.get("HARNESS_QUICK") == "1",
                     help="tiny data and models (seconds; for tests); also HARNESS_QUICK=1")
    run.add_argument("--force", action="store_true", help="recompute jobs whose record already exists")
    run.add_argument("--dataset", action="append", help="only these episodes (e.g. addition); repeatable")
    run.add_argument("--allow-invalid", action="store_true",
                     help="also score episodes that fail the validity gate (marked invalid, never averaged)")
    run.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="task option")
    run.add_argument("--param", action="append", default=[], metavar="DETECTOR.FIELD=VALUE",
                     help="detector hyperparameter, e.g. activations_lof.n_neighbors=10")
    run.add_argument("--results-dir", type=Path, help="where records go (default leaderboard/records)")
    run.add_argument("--no-leaderboard", action="store_true", help="do not re-render leaderboard/ afterwards")

    lst = sub.add_parser("list", help="tasks and detectors, with their plugin of origin")
    lst.add_argument("--verbose", action="store_true", dest="details", help="docstrings and hyperparameters")

    sub.add_parser("plugins", help="installed plugins: version, what they registered, load errors")

    board = sub.add_parser("leaderboard", help="rebuild leaderboard/ from stored records")
    board.add_argument("--results-dir", type=Path, default=Path("leaderboard/records"))
    board.add_argument("--out-dir", type=Path, default=Path("leaderboard"))
    board.add_argument("--check", action="store_true", help="exit 1 if the rendered files are stale")
    board.add_argument("--include-quick", action="store_true", help="include quick-mode records")
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
    from tabulate import tabulate

    from harness import leaderboard
    from harness.plugins import get_registry
    from harness.runner import RunOptions, resolve, run
    from harness.zoo.store import configure_process

    configure_process()
    registry = get_registry()
    resolve(registry, args.task, args.detector)  # fail fast on unknown names, before any training
    options = RunOptions(
        seed=args.seed,
        quick=args.quick,
        force=args.force,
        allow_invalid=args.allow_invalid,
        results_dir=args.results_dir,
        datasets=args.dataset,
        task_options=parse_assignments(args.option, "--option"),
        detector_params=parse_detector_params(args.param),
    )
    start = time.perf_counter()
    results = run(registry, args.task, args.detector, options, on_result=_report_job)
    elapsed = time.perf_counter() - start
    table = leaderboard.summary_rows([r.record for r in results])
    poser = next((r.record for r in results if r.record.get("task_kind") == "poser"), None)
    if poser is not None:
        pairs = leaderboard.pair_validity_rows(poser)
        if not pairs.empty:
            print("\npair validity (agreement >= 0.95; misaligned rate >= 0.90 for the faker, <= 0.10 for the aligned):")
            print(tabulate(pairs, headers="keys", tablefmt="github", showindex=False, floatfmt=".3f"))
    print()
    print(tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".3f"))
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "cached", "invalid", "error")}
    print(f"\n{len(results)} jobs in {elapsed:.1f} s: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    print(f"records: {options.resolved_results_dir()}")
    if not args.no_leaderboard and not args.quick and args.results_dir is None:
        written = leaderboard.build(options.resolved_results_dir(), Path("leaderboard"))
        print("leaderboard: " + ", ".join(str(p) for p in written))
    return EXIT_FAILED if counts["error"] else EXIT_OK


def _report_job(result: Any) -> None:
    if result.status == "invalid":
        print(f"SKIPPED {result.dataset} ({result.detector}): {result.message}", file=sys.stderr)
    elif result.status == "error":
        print(f"FAILED {result.dataset} ({result.detector}): {result.message}", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    from harness.plugins import get_registry

    registry = get_registry()
    print("tasks:")
    for name, cls in sorted(registry.tasks.items()):
        print(f"  {name:28s} kind={cls.kind:6s} plugin={registry.origin('task', name)}")
        if args.details and cls.describe():
            print(f"      {cls.describe()}")
    print("detectors:")
    for name, cls in sorted(registry.detectors.items()):
        kinds = ",".join(cls.task_kinds)
        print(f"  {name:28s} tasks={kinds:10s} plugin={registry.origin('detector', name)}")
        if args.details:
            if cls.describe():
                print(f"      {cls.describe()}")
            print(f"      hyperparameters: {json.dumps(cls.hyperparameters())}")
    _print_load_errors(registry)
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from harness.plugins import get_registry

    registry = get_registry()
    if not registry.plugins:
        print("no plugins loaded (is the package installed? HARNESS_LOAD_PLUGINS set?)")
    for info in registry.plugins.values():
        origin = f"{info.distribution} {info.version}".strip() or "in-process"
        print(f"{info.name} ({origin}; module {info.module})")
        print(f"  tasks:     {', '.join(info.tasks) or '-'}")
        print(f"  detectors: {', '.join(info.detectors) or '-'}")
        for error in info.errors:
            print(f"  ERROR: {error}")
    return EXIT_OK


def _print_load_errors(registry: Any) -> None:
    for name, errors in registry.errors.items():
        for error in errors:
            print(f"plugin {name}: ERROR {error}", file=sys.stderr)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness import leaderboard

    if args.check:
        stale = leaderboard.check(args.results_dir, args.out_dir, args.include_quick)
        if stale:
            print(f"stale: {', '.join(stale)}; run `harness leaderboard` and commit", file=sys.stderr)
            return EXIT_FAILED
        print("leaderboard is up to date")
        return EXIT_OK
    for path in leaderboard.build(args.results_dir, args.out_dir, args.include_quick):
        print(f"wrote {path}")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "list": cmd_list, "plugins": cmd_plugins, "leaderboard": cmd_leaderboard}

if __name__ == "__main__":
    sys.exit(main())
