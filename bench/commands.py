"""``livechat bench <name>``: the bench suite's subcommands.

Every bench module exposes ``add_arguments(parser)`` and ``run(args) -> BenchResult``; this module
adds the common ``--json PATH`` and ``--report DIR`` options, runs the bench, and writes both
outputs. Bench modules are imported when ``register`` builds the parser (their options are part
of it), never at this module's import; a missing or broken one (``routing``/``storage`` come from
other packages' work) turns into a subcommand that says why it is unavailable; the others work.

``livechat bench all --quick`` runs every bench in a small configuration (under 5 minutes in
total) as a smoke check; without ``--quick`` it runs each at its default size.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

import trio

from bench.common import BenchResult
from bench.report import write_outputs

# name -> (module, one-line help)
BENCHES: dict[str, tuple[str, str]] = {
    "e2e": ("bench.e2e", "whole server under chat load vs the bare relay ceiling"),
    "connections": ("bench.connections", "idle visitor connections: RSS each, connect rate"),
    "routing": ("bench.routing_bench", "routing core: assignments/s and latency"),
    "storage": ("bench.storage_bench", "storage layer: appends/s, reads, search"),
    "cluster": ("bench.cluster_bench", "one process vs --workers 2 on PostgreSQL, node SIGKILL"),
}

# ``all --quick``: each bench's small configuration (flags as on the command line). A bench
# module may define its own ``QUICK_ARGS``; one that accepts ``--quick`` gets that.
QUICK_ARGS: dict[str, list[str]] = {
    "e2e": ["--pairs", "100", "--rate", "500", "--duration", "5", "--closed-duration", "5"],
    "connections": ["--connections", "500", "--hold", "5"],
    "routing": ["--conversations", "500", "--agents", "50", "--messages", "4000"],
}

EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 3, 130


class BenchUnavailable(Exception):
    """The bench's module is not there (yet) or does not expose the bench interface."""


def _load(name: str) -> ModuleType:
    module_name = BENCHES[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name in (module_name, module_name.rpartition(".")[0]):
            raise BenchUnavailable(
                f"bench {name!r} is not available: {module_name} is not present yet"
            ) from err
        raise
    for attribute in ("add_arguments", "run"):
        if not callable(getattr(module, attribute, None)):
            raise BenchUnavailable(f"bench {name!r}: {module_name} has no {attribute}()")
    return module


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="write the machine-readable result here")
    parser.add_argument(
        "--report", metavar="DIR", help="write an HTML report with charts into this directory"
    )


def register(subparsers: Any) -> None:
    """Add ``bench`` and its subcommands to the ``livechat`` command."""
    bench = subparsers.add_parser(
        "bench",
        help="load tests: e2e, connections, routing, storage, cluster, all",
        description="Load tests of the whole server and its parts. Every bench shows a progress "
        "bar, and writes --json PATH and --report DIR when asked.",
    )
    sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, (_module, help_text) in BENCHES.items():
        parser = sub.add_parser(name, help=help_text, description=help_text)
        _add_output_options(parser)
        try:
            module = _load(name)
        except Exception as err:  # a missing or broken bench must not break `livechat`
            parser.set_defaults(handler=_unavailable_handler(str(err)))
            parser.description = f"{help_text} (unavailable: {err})"
            continue
        module.add_arguments(parser)
        parser.set_defaults(handler=_handler(name))
    every = sub.add_parser("all", help="run every bench (--quick: all of them in < 5 minutes)")
    _add_output_options(every)
    every.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    every.set_defaults(handler=_run_all)


def _unavailable_handler(message: str) -> Callable[[argparse.Namespace], int]:
    def handler(_args: argparse.Namespace) -> int:
        print(f"livechat bench: {message}", file=sys.stderr)
        return EXIT_UNAVAILABLE

    return handler


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            result = _run_one(name, args)
        except KeyboardInterrupt:
            print("\nlivechat bench: interrupted; server and files cleaned up", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BenchUnavailable as err:  # e.g. a service it needs is not running
            print(f"livechat bench: {err}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        except Exception as err:  # the edge of the command: say what failed, exit non-zero
            err = _innermost(err)
            print(f"livechat bench {name}: failed: {type(err).__name__}: {err}", file=sys.stderr)
            return EXIT_FAILED
        write_outputs([result], json_path=args.json, report_dir=args.report)
        _print_summary(result, args)
        return EXIT_OK

    return handler


def _innermost(err: Exception) -> Exception:
    """The one error inside nested one-error groups (a bench's nurseries), else ``err``."""
    while isinstance(err, ExceptionGroup) and len(err.exceptions) == 1:
        err = err.exceptions[0]
    return err


def _run_one(name: str, args: argparse.Namespace) -> BenchResult:
    module = _load(name)
    started = time.monotonic()
    result: BenchResult = module.run(args)
    result.parameters.setdefault("wall_s", round(time.monotonic() - started, 1))
    return result


def _print_summary(result: BenchResult, args: argparse.Namespace) -> None:
    scalars = {k: v for k, v in result.results.items() if isinstance(v, int | float | str)}
    line = ", ".join(f"{k}={v}" for k, v in scalars.items())
    print(f"{result.name}: {line}")
    if result.ratio_to_ceiling is not None:
        print(f"{result.name}: ratio_to_ceiling={result.ratio_to_ceiling}")
    targets = result.results.get("targets")
    if isinstance(targets, dict):
        for tname, target in targets.items():
            met = {True: "met", False: "MISSED"}.get(target.get("met"), "n/a")
            print(f"  target {tname}: {target.get('target')}: {target.get('measured')} ({met})")
    for note in result.notes:
        print(f"  note: {note}")
    if getattr(args, "json", None):
        print(f"  json: {args.json}")
    if getattr(args, "report", None):
        print(f"  report: {args.report}/index.html")


def _parse_bench_args(name: str, quick: bool) -> tuple[list[str], argparse.Namespace]:
    module = _load(name)
    parser = argparse.ArgumentParser(prog=f"livechat bench {name}")
    _add_output_options(parser)
    module.add_arguments(parser)
    argv: list[str] = []
    if quick:
        own = getattr(module, "QUICK_ARGS", None)
        if isinstance(own, list):
            argv = [str(a) for a in own]
        elif name in QUICK_ARGS:
            argv = QUICK_ARGS[name]
        elif "--quick" in parser._option_string_actions:
            argv = ["--quick"]
    return argv, parser.parse_args(argv)


def _run_all(args: argparse.Namespace) -> int:
    results: list[BenchResult] = []
    failures: list[str] = []
    for name in BENCHES:
        argv: list[str] = []
        try:
            argv, bench_args = _parse_bench_args(name, args.quick)
            print(f"== livechat bench {name} {' '.join(argv)}", file=sys.stderr)
            results.append(_run_one(name, bench_args))
        except BenchUnavailable as err:
            print(f"livechat bench: skipped: {err}", file=sys.stderr)
            failures.append(f"{name}: unavailable")
        except SystemExit:  # a bench rejected its quick arguments
            failures.append(f"{name}: bad arguments {argv}")
        except KeyboardInterrupt:
            print("\nlivechat bench: interrupted; server and files cleaned up", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (Exception, trio.TooSlowError) as err:
            traceback.print_exc(limit=3)
            failures.append(f"{name}: {type(err).__name__}: {err}")
    if results:
        write_outputs(results, json_path=args.json, report_dir=args.report)
        for result in results:
            _print_summary(result, argparse.Namespace())
    for failure in failures:
        print(f"livechat bench all: {failure}", file=sys.stderr)
    # A bench that is not there yet is reported, not fatal; one that failed is.
    broken = [f for f in failures if not f.endswith(": unavailable")]
    return EXIT_OK if results and not broken else EXIT_FAILED
