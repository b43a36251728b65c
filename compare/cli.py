"""Command line: ``python -m compare report|run|list|diff|matrix|bench|check``.

Usage errors exit with status 2 and one line on stderr, as argparse does, before any
engine starts; so does output that cannot be written to stdout. A run that could not
complete (an engine failed or timed out), whose parity checks fail, or whose report could
not be written exits 1; an interrupted one (Ctrl-C, SIGTERM) exits 130.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

from compare import faults
from compare.engines import ENGINES, REFERENCE, parse_engines
from compare.runner import DEFAULT_TIMEOUT

DTYPES = ("float32", "float64")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def seconds(text: str) -> float:
    """argparse type: a finite, positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite positive number of seconds")
    return value


def timeout_spec(text: str) -> Tuple[str, float]:
    """argparse type: SECONDS (every engine) or ENGINE=SECONDS (that engine only)."""
    engine, _, value = text.rpartition("=")
    engine = engine.strip()
    if engine and engine not in ENGINES:
        raise argparse.ArgumentTypeError(f"unknown engine {engine!r} in {text!r}; valid engines: {', '.join(ENGINES)}")
    return engine, seconds(value)


def timeouts(args: argparse.Namespace) -> Tuple[float, Dict[str, float]]:
    """(the default timeout, per-engine timeouts) from the repeated --timeout options."""
    default, per_engine = DEFAULT_TIMEOUT, {}
    for engine, value in args.timeout or []:
        if engine:
            per_engine[engine] = value
        else:
            default = value
    return default, per_engine


def at_least_one(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


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
    report.add_argument("--matrix", help="a `compare matrix` folder for the section across versions "
                                         "(default: OUT/matrix where it holds a matrix.json)")
    report.add_argument("--engines", help=f"comma-separated engine ids (default: all): {', '.join(ENGINES)}")
    report.add_argument("--dtype", choices=DTYPES + ("both",), default="both",
                        help="precision of the runs (default: both)")
    report.add_argument("--jobs", type=at_least_one, default=None,
                        help="engine processes at once (default: number of CPU cores)")
    report.add_argument("--timeout", type=timeout_spec, action="append", metavar="[ENGINE=]SECONDS",
                        help="seconds per engine process (default 900); ENGINE=SECONDS sets one engine's own, "
                             "and the option may be repeated")
    report.add_argument("--threads", type=at_least_one, default=1,
                        help="threads per framework (default 1; observations must not depend on it)")
    report.add_argument("--fresh", action="store_true",
                        help="run every engine even where the result cache holds a run with the same key "
                             "(versions, our code, dtype, threads, platform)")
    report.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    check = sub.add_parser(
        "check", help="check your own PyTorch GAN against its Keras port, stage by stage",
        description="FILE.py defines build_torch() -> (G, D) torch modules, build_keras(keras) -> (G, D) Keras "
                    "models (keras is the module to use: Keras 3 on any backend, or Keras 2), LATENT_SHAPE and "
                    "IMAGE_SHAPE in PyTorch layout; optionally BATCH, OPTIMIZER (Adam's lr, beta_1, beta_2, eps), "
                    "D_OUTPUT ('logits' or 'probabilities'), OVERRIDES (the weight port's pairing) and "
                    "train_step_torch / train_step_keras. The torch pair's weights are ported into each Keras "
                    "engine's pair; structure, forward passes in training and inference mode, gradients, one "
                    "iteration and N iterations are compared tensor by tensor; the first divergence is named, "
                    "and each suspected cause is switched off in a run of its own to confirm it. Exit 0: PASS; "
                    "1: FAIL, or ABSTAIN (the reference does not reproduce itself, or no engine could run); "
                    "2: a usage error (one line on stderr).")
    check.add_argument("file", metavar="FILE.py", help="the model pair")
    check.add_argument("--engines", help="comma-separated Keras engine ids (default: every one): "
                                         f"{', '.join(e for e in ENGINES if e != REFERENCE)}")
    check.add_argument("--dtype", choices=DTYPES, default="float32", help="precision (default: float32)")
    check.add_argument("--iterations", type=at_least_one, default=10, help="training iterations (default: 10)")
    check.add_argument("--out", help="folder for check.json, check.md and check.html (created if missing)")
    check.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                       help=f"seconds per engine process (default {DEFAULT_TIMEOUT:.0f})")
    check.add_argument("--no-diagnosis", action="store_true", help="locate the first divergence, run no counterfactual")
    check.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    sub.add_parser("list", help="the engines (installed or not) and the scenarios")

    run = sub.add_parser("run", help="run one scenario and print what it did, as a table")
    run.add_argument("scenario", help="a scenario id (see `compare list`)")
    run.add_argument("--engines", help="comma-separated engine ids (default: all)")
    run.add_argument("--timeout", type=timeout_spec, action="append", metavar="[ENGINE=]SECONDS",
                     help="seconds per engine process (default 900); ENGINE=SECONDS for one engine, repeatable")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    matrix = sub.add_parser(
        "matrix", help="the scenarios and parity stages in an environment per version point (compare matrix --help)",
        description="For each point of the points file (pinned framework versions): make or reuse its environment, "
                    "run compare report there from this source tree, keep OUT/POINT/results.json, and write "
                    "OUT/matrix.json. A point that cannot install or import is recorded with the reason.")
    matrix.add_argument("--points", help="the points file (default: the committed matrix, compare/matrix_points.json)")
    matrix.add_argument("--out", default="reports/matrix", help="folder for the results (default: reports/matrix)")
    matrix.add_argument("--jobs", type=at_least_one, default=1, help="points at once (default 1)")
    matrix.add_argument("--only", help="comma-separated point ids: run these points only (the summary keeps the "
                                       "earlier entries of the others)")
    matrix.add_argument("--dtype", choices=DTYPES + ("both",), default="both",
                        help="precision of each point's report (default: both)")
    matrix.add_argument("--rebuild", action="store_true", help="make every environment again")
    matrix.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

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
    engines = parse_options(args, parser)
    scenario = scenarios[args.scenario]
    wanted = [e for e in engines if e in scenario.implementations]

    progress = progress_printer(args.quiet)

    with workspace() as workdir:
        default, per_engine = timeouts(args)
        runs = run_engines(wanted, [scenario.dtype], workdir, timeout=default, timeouts=per_engine, progress=progress,
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


def cmd_matrix(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from compare import matrix

    path = args.points or matrix.DEFAULT_POINTS
    try:
        points = matrix.load_points(path)
    except matrix.MatrixError as exc:
        parser.error(str(exc))
    every = points
    if args.only:
        wanted = [p.strip() for p in args.only.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in {point["id"] for point in points}]
        if unknown or not wanted:
            parser.error(f"unknown point {', '.join(unknown) or repr(args.only)}; points in {path}: "
                         f"{', '.join(p['id'] for p in points)}")
        points = [p for p in points if p["id"] in wanted]
    output_folder(args.out, parser)

    progress = progress_printer(args.quiet)

    started = time.monotonic()
    entries = matrix.run_matrix(points, args.out, path, jobs=args.jobs, dtype=args.dtype, progress=progress,
                                rebuild=args.rebuild, order=every)
    progress(f"wrote {os.path.join(args.out, matrix.SUMMARY)} and {sum(1 for e in entries if e.get('results'))} "
             f"results.json in {time.monotonic() - started:.0f} s")
    return 0 if all(e["status"] == "ok" for e in entries) else 1


def parse_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> List[str]:
    """The engines asked for, once --engines and COMPARE_FAULT_INJECT are known to be valid."""
    try:
        faults.parse(os.environ.get(faults.ENV, ""))
        return parse_engines(args.engines)
    except ValueError as exc:
        parser.error(str(exc))


def output_problem(args: argparse.Namespace, paths: Dict[str, str]) -> Optional[str]:
    """Why the report could not write ``paths`` (report.output_paths), or None; nothing is created."""
    from compare.report import guide_clash

    guide = paths["guide"]
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        return f"--out {args.out} is a file; give a folder"
    for name, path in paths.items():
        if os.path.isdir(path):
            return (f"--guide {guide} is a folder; give a file name" if name == "guide" else
                    f"{path} is a folder; the report writes a file there")
    clash = guide_clash(paths)
    if clash:
        return f"--guide {guide} makes {paths[clash[0]]}, the same file as {paths[clash[1]]}; give another name"
    guide_dir = os.path.dirname(os.path.abspath(guide))
    if os.path.realpath(guide_dir) != os.path.realpath(args.out) and not (
            os.path.isdir(guide_dir) and os.access(guide_dir, os.W_OK)):
        return f"cannot write the guide to {guide}: its folder does not exist or is not writable"
    return None


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr, or nothing with --quiet."""
    def progress(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)
    return progress


def output_folder(path: str, parser: argparse.ArgumentParser) -> None:
    """Make the --out folder (a usage error if it is a file or cannot be written)."""
    if os.path.exists(path) and not os.path.isdir(path):
        parser.error(f"--out {path} is a file; give a folder")
    problem = make_folder(path)
    if problem:
        parser.error(problem)


def make_folder(path: str) -> Optional[str]:
    """Create ``path`` (and its missing parents) and check that a file can be made in it;
    on failure remove what was created and say why."""
    missing = []
    parent = os.path.abspath(path)
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-").close()
    except OSError as exc:
        for folder in missing:  # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                break
        return f"cannot write to --out {path}: {exc.strerror or exc}"
    return None


def cmd_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from compare import report
    from compare.diff import ResultsError

    args.interrupted = "earlier report files are untouched"  # until the new set is in place
    engines = parse_options(args, parser)
    out_dir = args.out
    paths = report.output_paths(out_dir, args.guide)
    problem = output_problem(args, paths)
    if problem:
        parser.error(problem)
    bench_path = args.bench or os.path.join(out_dir, "bench.json")
    performance = None
    if args.bench or os.path.exists(bench_path):
        other = report.clash_with(bench_path, paths)
        if other:
            parser.error(f"the bench results {bench_path} are the same file as {paths[other]}, which the report replaces")
        try:
            performance = report.load_bench(bench_path)
        except ResultsError as exc:
            parser.error(str(exc))
    matrix_dir = args.matrix or os.path.join(out_dir, "matrix")
    view = None
    if args.matrix or os.path.isfile(os.path.join(matrix_dir, "matrix.json")):
        from compare.matrix_view import view_of

        try:
            view = view_of(matrix_dir)
        except ResultsError as exc:
            parser.error(str(exc))
    problem = make_folder(out_dir)  # last: a usage error leaves no folder behind
    if problem:
        parser.error(problem)
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]

    progress = progress_printer(args.quiet)

    if REFERENCE not in engines:
        progress(f"note: adding {REFERENCE}, the reference every other engine is compared with")
        engines = [REFERENCE] + engines

    from compare import parity
    from compare.observations import collect
    from compare.runner import removed_variables, run_engines, workspace

    removed = removed_variables()
    if removed:
        progress(f"note: not passed to the engines (the runner sets its own): {', '.join(removed)}")
    from compare import cache

    started = time.monotonic()
    # a run with injected faults is a test of the runner, never a result worth keeping or reusing
    plans = {(e, d): cache.plan(e, d, args.threads, fresh=args.fresh)
             for e in engines if ENGINES[e].available() for d in dtypes} if not os.environ.get(faults.ENV) else {}
    for (engine, dtype), plan in plans.items():
        if plan.hits:
            progress(f"[{engine} {dtype}] {report.reuse_note(plan.reused)} (same versions, code and platform)")
    with workspace() as workdir:
        default, per_engine = timeouts(args)
        runs = run_engines(engines, dtypes, workdir, jobs=args.jobs, timeout=default, timeouts=per_engine,
                           progress=progress, threads=args.threads,
                           skip={pair for pair, plan in plans.items() if plan.complete},
                           parts={pair: (plan.parity, plan.scenarios if plan.hits else None)
                                  for pair, plan in plans.items()})
        for pair, plan in plans.items():
            if pair in runs:
                cache.keep(plan, runs[pair])
            runs[pair] = cache.merge(plan, runs.get(pair))
        runs = {k: runs[k] for k in sorted(runs, key=lambda k: (list(ENGINES).index(k[0]), k[1]))}
        records = parity.compare_runs(runs)
        observations = collect(engines, runs)
        results = report.build_results(engines, dtypes, runs, records, observations, performance)
        results["matrix"] = view
    done = "the new report files are complete"
    try:
        paths = report.write_report(out_dir, results, args.guide)
    except report.ReplacedThenInterrupted:
        args.interrupted = done
        raise
    except Exception as exc:  # a full disk, --out removed meanwhile, ...: the run's results are not lost
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        try:
            kept = f"the run's results.json is kept at {report.keep_results(results)}"
        except OSError as error:
            kept = f"the run's results could not be kept either: {error.strerror or error}"
        print(f"compare: error: cannot write the report to {out_dir}: {reason}; {kept}", file=sys.stderr)
        return 1
    args.interrupted = done
    incomplete = [f"{e} {d}: {r.status} ({r.reason})" for (e, d), r in runs.items() if r.status in ("failed", "timeout")]
    failing = [r for r in records if r["config"] == "parity" and not r["holds"]]
    progress(f"wrote {', '.join(paths)} in {time.monotonic() - started:.0f} s")
    for line in incomplete:
        progress(f"incomplete: {line}")
    if failing:
        progress(f"{len(failing)} parity checks fail; see {paths[1]}")
    return 1 if incomplete or failing else 0


def cmd_check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from compare.check.run import CheckError, check, validate

    try:
        validate(args.file, args.engines, args.dtype, args.iterations)
    except CheckError as exc:
        parser.error(str(exc))
    if args.out:
        output_folder(args.out, parser)

    progress = progress_printer(args.quiet)

    try:
        result = check(args.file, engines=args.engines, dtype=args.dtype, iterations=args.iterations,
                       out=args.out, progress=progress, timeout=args.timeout, diagnosis=not args.no_diagnosis)
    except CheckError as exc:
        parser.error(str(exc))
    print(f"{result.verdict}: {args.file}")
    print(result.summary())
    if args.out:
        progress(f"wrote {os.path.join(args.out, 'check.json')}, check.md and check.html")
    return result.exit_code


def _terminate(signum, frame):
    raise KeyboardInterrupt


class OutputError(Exception):
    """Standard output could not be written (a full disk, /dev/full)."""


class GuardedOutput:
    """A stream whose failed writes raise OutputError, told apart from any other OSError
    (BrokenPipeError passes: a reader that stopped is not an error)."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        return self._guard(self.stream.write, text)

    def flush(self) -> None:
        self._guard(self.stream.flush)

    @staticmethod
    def _guard(call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc)) from exc


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit cannot fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; every way out is an exit status, with at most one line on stderr."""
    args = None
    stdout, sys.stdout = sys.stdout, GuardedOutput(sys.stdout)
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):  # they stop a run the way Ctrl-C does
            signal.signal(signum, _terminate)
        argv = sys.argv[1:] if argv is None else argv
        if argv[:1] == ["bench"]:  # the bench command parses its own options
            from compare import bench

            status = bench.main(argv[1:])
        else:
            parser = build_parser()
            args = parser.parse_args(argv)
            commands = {"list": lambda a, p: cmd_list(), "diff": cmd_diff, "run": cmd_run, "report": cmd_report,
                        "check": cmd_check, "matrix": cmd_matrix}
            status = commands[args.command](args, parser)
        sys.stdout.flush()  # here, where a failure can still be reported
        return status
    except KeyboardInterrupt:
        note = getattr(args, "interrupted", None)  # what cmd_report knows of its files
        print("compare: interrupted" + (f"; {note}" if note else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. head, which stopped reading
        silence_stdout()
        return 0
    except OutputError as exc:
        silence_stdout()
        print(f"compare: error: cannot write to standard output: {exc}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout
