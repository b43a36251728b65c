"""Command line: ``python -m compare report|run|list|diff|bench``.

Usage errors exit with status 2 and one line on stderr, as argparse does; a run that
could not complete (an engine failed or timed out) or whose parity checks fail exits 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from typing import List, Optional

from compare.engines import ENGINES, REFERENCE, parse_engines

DTYPES = ("float32", "float64")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="compare", description=(
        "Run the same toy GAN through the same training steps in PyTorch and Keras "
        "(Keras 3 on TensorFlow, JAX and PyTorch; Keras 2 via tf_keras) and report how they differ."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    report = sub.add_parser("report", help="run every installed engine and write results.json and REPORT.md")
    report.add_argument("--out", required=True,
                        help="folder for results.json, REPORT.md and report.html (created if missing)")
    report.add_argument("--guide", help="where to write the migration guide (default: OUT/migration-guide.md)")
    report.add_argument("--bench", help="a `compare bench` results file for the performance section "
                                        "(default: OUT/bench.json where it exists)")
    report.add_argument("--engines", help=f"comma-separated engine ids (default: all): {', '.join(ENGINES)}")
    report.add_argument("--dtype", choices=DTYPES + ("both",), default="both",
                        help="precision of the runs (default: both)")
    report.add_argument("--jobs", type=int, default=None,
                        help="engine processes at once (default: number of CPU cores)")
    report.add_argument("--timeout", type=float, default=900.0, help="seconds per engine process (default 900)")
    report.add_argument("--threads", type=int, default=1,
                        help="threads per framework (default 1; observations must not depend on it)")
    report.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    sub.add_parser("list", help="the engines (installed or not) and the scenarios")

    run = sub.add_parser("run", help="run one scenario and print what it did, as a table")
    run.add_argument("scenario", help="a scenario id (see `compare list`)")
    run.add_argument("--engines", help="comma-separated engine ids (default: all)")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds per engine process (default 900)")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    sub.add_parser("bench", add_help=False,
                   help="time and memory of each idiom, measured and predicted (compare bench --help)")

    diff = sub.add_parser(
        "diff", help="what changed between two results.json files (exit 1 if anything did)",
        description="Print one line per change in observations (status, exception, which tensors changed and "
                    "gradients, per step), claim verdicts and parity verdicts, a record present in only one file "
                    "included, then a count. Exit 0: nothing changed; 1: something did; 2: a file could not be "
                    "read or is not a results.json (one line on stderr).")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--json", action="store_true",
                      help="print the changes as a JSON list instead, each an object with the keys kind "
                           "(observation, claim or parity), scenario, engine, init, variant (observations and "
                           "claims), dtype, config, stage, quantity (parity), step (counted from 1) and label "
                           "(for a step), what (a tensor, \"status\", \"claim ID\", \"verdict\", ...), old, new "
                           "(null where the record is only in the other file); keys that do not apply are null")
    return parser


def cmd_list() -> int:
    from tabulate import tabulate

    from compare.scenarios import catalog

    rows = []
    for engine, spec in ENGINES.items():
        missing = spec.missing()
        versions = ", ".join(f"{k} {v}" for k, v in spec.versions().items() if v)
        rows.append([engine, spec.description, "yes" if not missing else "no", versions,
                     "" if not missing else spec.install])
    print(tabulate(rows, ["engine", "framework", "installed", "versions", "install"], tablefmt="github"))
    print()
    rows = [[s.id, ", ".join(e for e in ENGINES if e in s.implementations), s.question] for s in catalog().values()]
    print(tabulate(rows, ["scenario", "engines", "question"], tablefmt="github", maxcolwidths=[None, 30, 70]))
    return 0


def cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from tabulate import tabulate

    from compare.observations import collect
    from compare.report import moved_cell
    from compare.runner import run_engines, workspace
    from compare.scenarios import catalog

    scenarios = catalog()
    if args.scenario not in scenarios:
        parser.error(f"unknown scenario {args.scenario}; valid scenarios: {', '.join(scenarios)}")
    try:
        engines = parse_engines(args.engines)
    except ValueError as exc:
        parser.error(str(exc))
    scenario = scenarios[args.scenario]
    wanted = [e for e in engines if e in scenario.implementations]

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    with workspace() as workdir:
        runs = run_engines(wanted, [scenario.dtype], workdir, timeout=args.timeout, progress=progress,
                           parity=False, scenarios=[scenario.id])
        records = collect(engines, runs, only=[scenario.id])
    print(f"{scenario.id}: {scenario.question}\n")
    rows = []
    for r in records:
        where = r["init"] + (f" [{r['variant']}]" if r["variant"] else "")
        if r["status"] in ("not-applicable", "unavailable", "failed"):
            rows.append([r["engine"], where, "", r["status"], r.get("reason") or (r.get("error") or {}).get("message")])
            continue
        for step in r["steps"]:
            moved = "; ".join(f"{net} {kind}" for net in ("G", "D") for kind in ("params", "state")
                              if step["changed"][net][kind])
            error = step.get("error")
            rows.append([r["engine"], where, step["label"], moved or "nothing",
                         f"{error['type']}: {error['message'][:100]}" if error else ""])
        rows.append([r["engine"], where, "overall", moved_cell(r), ""])
    print(tabulate(rows, ["engine", "init", "step", "changed", "exception"], tablefmt="github"))
    verdicts = [[r["engine"], r["init"], c["claim"], c["verdict"]] for r in records for c in r.get("claims", [])
                if c["verdict"] != "not-applicable"]
    if verdicts:
        print()
        print(tabulate(verdicts, ["engine", "init", "claim", "verdict"], tablefmt="github"))
    return 1 if any(r["status"] == "failed" for r in records) else 0


def cmd_diff(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from compare.diff import ResultsError, changes, load, summary

    try:
        found = changes(load(args.old), load(args.new))
    except ResultsError as exc:
        print(f"compare diff: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([c.as_json() for c in found], indent=1))
    elif not found:
        print("no observation, claim verdict or parity verdict changed")
    else:
        print("\n".join(c.line() for c in found))
        print(summary(found))
    return 1 if found else 0


def cmd_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        engines = parse_engines(args.engines)
    except ValueError as exc:
        parser.error(str(exc))
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    out_dir = args.out
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        parser.error(f"cannot write to --out {out_dir}: {exc.strerror or exc}")
    if args.guide:
        guide_dir = os.path.dirname(os.path.abspath(args.guide))
        if not os.path.isdir(guide_dir) or not os.access(guide_dir, os.W_OK):
            parser.error(f"cannot write the guide to {args.guide}: its folder does not exist or is not writable")
    bench_path = args.bench or os.path.join(out_dir, "bench.json")
    performance = None
    if args.bench or os.path.exists(bench_path):
        from compare.diff import ResultsError
        from compare.report import load_bench

        try:
            performance = load_bench(bench_path)
        except ResultsError as exc:
            parser.error(str(exc))
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if REFERENCE not in engines:
        progress(f"note: adding {REFERENCE}, the reference every other engine is compared with")
        engines = [REFERENCE] + engines

    from compare import parity, report
    from compare.observations import collect
    from compare.runner import removed_variables, run_engines, workspace

    removed = removed_variables()
    if removed:
        progress(f"note: not passed to the engines (the runner sets its own): {', '.join(removed)}")
    started = time.monotonic()
    with workspace() as workdir:
        runs = run_engines(engines, dtypes, workdir, jobs=args.jobs, timeout=args.timeout, progress=progress,
                           threads=args.threads)
        records = parity.compare_runs(runs)
        observations = collect(engines, runs)
        results = report.build_results(engines, dtypes, runs, records, observations, performance)
    paths = report.write_report(out_dir, results, args.guide)
    incomplete = [f"{e} {d}: {r.status} ({r.reason})" for (e, d), r in runs.items() if r.status in ("failed", "timeout")]
    failing = [r for r in records if r["config"] == "parity" and not r["holds"]]
    progress(f"wrote {', '.join(paths)} in {time.monotonic() - started:.0f} s")
    for line in incomplete:
        progress(f"incomplete: {line}")
    if failing:
        progress(f"{len(failing)} parity checks fail; see {paths[1]}")
    return 1 if incomplete or failing else 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the bench command parses its own options
        from compare import bench

        signal.signal(signal.SIGTERM, _terminate)
        return bench.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # they stop a run the way Ctrl-C does
        signal.signal(signum, _terminate)
    commands = {"list": lambda a, p: cmd_list(), "diff": cmd_diff, "run": cmd_run, "report": cmd_report}
    try:
        status = commands[args.command](args, parser)
        sys.stdout.flush()  # a full disk shows here, where it can be reported, not at exit
        return status
    except KeyboardInterrupt:
        print("compare: interrupted; earlier report files are untouched", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. head, which stopped reading
        _discard_stdout()
        return 0
    except OSError as exc:
        if args.command not in ("diff", "list"):  # these only read files and print: the error is the output's
            raise
        _discard_stdout()
        print(f"compare {args.command}: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not fail (and print a traceback) again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
