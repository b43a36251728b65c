"""Command line: ``python -m compare report|list``.

Usage errors exit with status 2 and one line on stderr, as argparse does; a run that
could not complete (an engine failed or timed out) or whose parity checks fail exits 1.
"""

from __future__ import annotations

import argparse
import os
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
    report.add_argument("--out", required=True, help="folder for results.json and REPORT.md (created if missing)")
    report.add_argument("--engines", help=f"comma-separated engine ids (default: all): {', '.join(ENGINES)}")
    report.add_argument("--dtype", choices=DTYPES + ("both",), default="both",
                        help="precision of the runs (default: both)")
    report.add_argument("--jobs", type=int, default=None,
                        help="engine processes at once (default: number of CPU cores)")
    report.add_argument("--timeout", type=float, default=900.0, help="seconds per engine process (default 900)")
    report.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    sub.add_parser("list", help="the engines and whether each is installed")
    return parser


def cmd_list() -> int:
    from tabulate import tabulate

    rows = []
    for engine, spec in ENGINES.items():
        missing = spec.missing()
        versions = ", ".join(f"{k} {v}" for k, v in spec.versions().items() if v)
        rows.append([engine, spec.description, "yes" if not missing else "no", versions,
                     "" if not missing else spec.install])
    print(tabulate(rows, ["engine", "framework", "installed", "versions", "install"], tablefmt="github"))
    return 0


def cmd_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        engines = parse_engines(args.engines)
    except ValueError as exc:
        parser.error(str(exc))
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    out_dir = args.out
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        parser.error(f"cannot write to --out {out_dir}: {exc.strerror or exc}")
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if REFERENCE not in engines:
        progress(f"note: adding {REFERENCE}, the reference every other engine is compared with")
        engines = [REFERENCE] + engines

    from compare import parity, report
    from compare.runner import run_engines

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="compare-") as workdir:
        runs = run_engines(engines, dtypes, workdir, jobs=args.jobs, timeout=args.timeout, progress=progress)
        records = parity.compare_runs(runs)
        results = report.build_results(engines, dtypes, runs, records)
    paths = report.write_report(out_dir, results)
    incomplete = [f"{e} {d}: {r.status} ({r.reason})" for (e, d), r in runs.items() if r.status in ("failed", "timeout")]
    failing = [r for r in records if r["config"] == "parity" and not r["holds"]]
    progress(f"wrote {', '.join(paths)} in {time.monotonic() - started:.0f} s")
    for line in incomplete:
        progress(f"incomplete: {line}")
    if failing:
        progress(f"{len(failing)} parity checks fail; see {paths[1]}")
    return 1 if incomplete or failing else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        return cmd_list()
    try:
        return cmd_report(args, parser)
    except KeyboardInterrupt:
        print("compare: interrupted; earlier report files are untouched", file=sys.stderr)
        return 130
