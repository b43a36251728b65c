"""``python -m compare bench``: what each way of writing the GAN step costs, measured side by
side and predicted from a FLOP and memory model.

Idioms (their code and cost formulas live in each engine's ``bench.py``):

- torch: detach (the baseline), retain-graph, recompute, requires-grad-off;
- every Keras engine: custom-step (the baseline: tf.function on TensorFlow, jax.jit on JAX,
  eager on keras-torch), combined-toggling, combined-frozen (train_on_batch, compiled).

Measurement. One child process per (engine, size) times every idiom of the engine, the
idioms interleaved (the order rotates every repeat), so that machine noise hits them alike;
each ratio is taken pair by pair (idiom / baseline within one repeat), then its median and
interquartile range. Peak memory is measured in a fresh child process per (engine, size,
idiom): on the CPU, the growth of the resident set over the steady state during two
iterations (Linux: peak RSS, VmHWM, reset through /proc/self/clear_refs after warm-up, with
glibc's mmap threshold fixed and TensorFlow's oneDNN allocator sent to malloc, so that freed
tensors leave the RSS; elsewhere: resource.getrusage's ru_maxrss, whose earlier peak hides
growth below it); on CUDA, the framework allocator's peak.

Model. FLOPs are counted, once per size, with torch.utils.flop_counter.FlopCounterMode
(convolution and matmul FLOPs; elementwise work, BatchNorm and Adam are not counted), in
blocks: FG, FD (one forward of G, of D), BG (one backward of G), BDw, BDwx, BDx (one backward
of D making its weight gradients; weight and input gradients; the input gradient only).
An idiom's cost is a formula in these blocks, e.g. detach = FG + 3 FD + 2 BDw + BDwx + BG;
its predicted ratio is formula / baseline formula. Memory is modelled as the bytes alive
at the iteration's peak, usually when the G step's backward starts: gradients (PG, PD) and
tensors saved for backward (AG, ADw, ADwx, ADx: counted with
torch.autograd.graph.saved_tensors_hooks); where another phase may be the peak, the formula
is the max over phases. Nothing in the
model comes from a timing.

This module imports no framework: frameworks are imported in the child processes only
(``python -m compare.bench --child ...``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

from compare.engines import ENGINES, REFERENCE, parse_engines
from compare.runner import DEFAULT_TIMEOUT, child_environment, in_parallel, run_process

SCHEMA = "compare.bench/1"
SIZES = ("toy", "dcgan64")
SIZE_NOTES = {
    "toy": "the toy GAN of compare.models.toy, batch 8",
    "dcgan64": "the PyTorch DCGAN example (nz 100, ngf 64, ndf 64, 64x64x3 images, D ends in logits), batch 64",
}
TOLERANCE = 0.25  # a measured ratio "agrees" within 25 % of the predicted one
SAMPLE_SECONDS = 0.5  # a timed sample repeats the iteration until it lasts about this long
MEMORY_ITERATIONS = 2
CHILD_TIMEOUT = 1800.0
STDERR_TAIL = 20
BLOCKS = {
    "FG": "FLOPs of one G forward",
    "FD": "FLOPs of one D forward",
    "BG": "FLOPs of one G backward (weight gradients; z needs none)",
    "BDw": "FLOPs of one D backward making its weight gradients (the input needs none)",
    "BDwx": "FLOPs of one D backward making weight and input gradients",
    "BDx": "FLOPs of one D backward making the input gradient only (D frozen)",
    "PG": "bytes of G's parameter gradients",
    "PD": "bytes of D's parameter gradients",
    "AG": "bytes autograd saves for backward in one G forward (parameters excluded)",
    "ADw": "the same for one D forward, weights requiring grad",
    "ADwx": "the same, weights and input requiring grad",
    "ADx": "the same, input only requiring grad (D frozen)",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="compare bench", description=(
        "Time and measure the memory of each GAN training-step idiom per engine, side by side, "
        "and compare each ratio against the detach (torch) or custom-step (Keras) baseline with "
        "the ratio a FLOP and memory model predicts."))
    parser.add_argument("--engines", help=f"comma-separated engine ids (default: all installed): {', '.join(ENGINES)}")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated sizes (default: {','.join(SIZES)})")
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per idiom (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations per idiom first (default 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu (default) or cuda (TF32 off); cuda needs a GPU")
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--report-floor", action="store_true",
                        help="also time `python -m compare report` against starting its engine processes: cold "
                             "(an empty result cache), again with nothing changed, and after an edit to one scenario "
                             "(in a temporary copy of the package), back to back (minutes)")
    parser.add_argument("--edit-scenario", default=EDITED_SCENARIO,
                        help=f"the scenario whose code --report-floor edits (default {EDITED_SCENARIO})")
    parser.add_argument("--suite", action="store_true",
                        help="also time the package's tests: all of them and `--engines torch` (minutes)")
    parser.add_argument("--check-floor", action="store_true",
                        help="also time `compare check` on the toy pair for each Keras engine (10 iterations, no "
                             "diagnosis) against importing torch plus that engine's framework, aiming at 3 times")
    parser.add_argument("--report-only", action="store_true",
                        help="time no idiom: only what --report-floor, --check-floor and --suite ask for")
    parser.add_argument("--matrix", metavar="DIR",
                        help="instead: run the `compare matrix` of DIR again (warm environments and result cache) "
                             "and print its time against running the report once per point")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, judged without importing a framework."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    try:
        if os.listdir("/proc/driver/nvidia/gpus"):
            return True
    except OSError:
        pass
    return any(name.startswith("nvidia") and name[6:].isdigit() for name in _listdir("/dev"))


def _listdir(path: str) -> List[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def bench_module(engine: str) -> str:
    """'compare.engines.torch.engine' -> 'compare.engines.torch.bench': the counterpart by name."""
    return ENGINES[engine].module.rsplit(".", 1)[0] + ".bench"


# --- statistics and the model ----------------------------------------------------------------

def quantile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: List[float]) -> float:
    return quantile(values, 0.5)


def iqr(values: List[float]) -> float:
    return quantile(values, 0.75) - quantile(values, 0.25)


def evaluate(formula, blocks: Dict[str, int]) -> int:
    """A formula is a sum of blocks ({block: count}) or, for memory, a list of such sums
    (the phases of an iteration), of which the largest is the peak."""
    if isinstance(formula, list):
        return max(evaluate(phase, blocks) for phase in formula)
    return sum(count * blocks[name] for name, count in formula.items())


def render(formula) -> str:
    if isinstance(formula, list):
        return f"max({', '.join(render(phase) for phase in formula)})"
    return " + ".join(name if n == 1 else f"{n} {name}" for name, n in formula.items())


def within(measured: Optional[float], predicted: Optional[float]) -> Optional[bool]:
    if measured is None or predicted is None:
        return None
    return abs(measured / predicted - 1) <= TOLERANCE


# --- the child process -----------------------------------------------------------------------

def _progress_printer(label: str) -> Callable[[str], None]:
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[bench {label} {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    return progress


def _iterate(idiom, n: int) -> float:
    """Seconds per iteration over ``n`` iterations; the loss is read every iteration (what a
    user's logging does), which also waits for asynchronous devices."""
    gc.collect()
    gc.disable()  # a collection inside one sample and not another would be noise
    try:
        started = time.perf_counter()
        for _ in range(n):
            idiom.sync(idiom.step())
        return (time.perf_counter() - started) / n
    finally:
        gc.enable()


def time_idioms(bench, size: str, device: str, repeats: int, warmup: int, progress) -> dict:
    idioms = [bench.build(idiom_id, size, device) for idiom_id in bench.idioms]
    for _ in range(warmup):  # compilation, tracing, optimizer slots
        for idiom in idioms:
            _iterate(idiom, 1)
    # iterations per sample, from one more iteration: short samples are mostly timer noise
    per_sample = {i.id: max(1, round(SAMPLE_SECONDS / _iterate(i, 1))) for i in idioms}
    samples: Dict[str, List[float]] = {i.id: [] for i in idioms}
    for r in range(repeats):
        order = idioms[r % len(idioms):] + idioms[:r % len(idioms)]  # rotate: no idiom always first
        for idiom in order:
            seconds = _iterate(idiom, per_sample[idiom.id])
            samples[idiom.id].append(seconds)
            progress(f"{idiom.id}: repeat {r + 1}/{repeats}, {seconds * 1e3:.2f} ms/iteration")
    return {"baseline": bench.idioms[0], "idioms": {
        i.id: {"samples_s": samples[i.id], "iterations_per_sample": per_sample[i.id],
               "flops_formula": i.flops, "memory_formula": i.memory, "facts": i.facts} for i in idioms}}


def _rss_probe() -> Tuple[Callable[[], None], Callable[[], Tuple[int, int]], str]:
    """(reset, read, method) for the resident set; read gives (peak, at reset) bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)
    except OSError:
        pass
    else:
        def status(field: str) -> int:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
            raise OSError(f"no {field} in /proc/self/status")

        state = {}

        def reset():
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            state["base"] = status("VmRSS")

        return reset, lambda: (status("VmHWM"), state["base"]), "rss-hwm"
    # ru_maxrss is a process-lifetime high-water mark: only growth above the earlier peak shows
    import resource  # Unix only

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    state = {}

    def maxrss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def reset_maxrss():
        state["base"] = maxrss()

    return reset_maxrss, lambda: (maxrss(), state["base"]), "ru_maxrss"


def measure_memory(bench, idiom_id: str, size: str, device: str, warmup: int, progress) -> dict:
    idiom = bench.build(idiom_id, size, device)
    for _ in range(max(1, warmup)):  # compilation, optimizer slots: the steady state
        idiom.sync(idiom.step())
    gc.collect()
    if device == "cuda":
        probe = bench.gpu_memory()
        if probe is None:
            return {"peak_bytes": None, "method": "none: no allocator statistics for this framework"}
        (reset, read), method = probe, "gpu-allocator"
    else:
        reset, read, method = _rss_probe()
    reset()
    for _ in range(MEMORY_ITERATIONS):
        idiom.sync(idiom.step())
    peak, base = read()
    progress(f"{idiom_id}: peak {(peak - base) / 2 ** 20:.1f} MiB over the steady state ({method})")
    return {"peak_bytes": max(0, peak - base), "absolute_peak_bytes": peak, "method": method}


def child_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="compare.bench --child")
    parser.add_argument("mode", choices=("time", "memory", "count"))
    parser.add_argument("engine", choices=list(ENGINES))
    parser.add_argument("sizes")
    parser.add_argument("device")
    parser.add_argument("out")
    parser.add_argument("--idiom")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    progress = _progress_printer(f"{args.engine} {args.sizes}" + (f" {args.idiom}" if args.idiom else ""))
    progress(f"{args.mode}: importing framework")
    bench = importlib.import_module(bench_module(args.engine)).BENCH
    reason = bench.setup(args.device)
    if reason:
        result = {"status": "unavailable", "reason": reason}
    elif args.mode == "count":
        result = {"status": "ok", "sizes": {size: bench.count(size, args.device) for size in args.sizes.split(",")}}
    elif args.mode == "time":
        result = {"status": "ok", "versions": bench.versions(),
                  **time_idioms(bench, args.sizes, args.device, args.repeats, args.warmup, progress)}
    else:
        result = {"status": "ok", **measure_memory(bench, args.idiom, args.sizes, args.device, args.warmup, progress)}
    write_json(args.out, result)
    return 0


# --- the parent ------------------------------------------------------------------------------

def write_json(path: str, data) -> None:
    """Complete or not at all (a temp file in the same folder, then a rename)."""
    from compare.report import write_atomic

    write_atomic(path, json.dumps(data, indent=1))


def bench_environment(engine: str, device: str, memory: bool) -> Dict[str, str]:
    env = child_environment(engine, "float32")
    if device == "cuda":
        # child_environment hides GPUs and pins JAX to the CPU (parity runs): undo both
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            env.pop("CUDA_VISIBLE_DEVICES", None)
        if env.get("JAX_PLATFORMS") == "cpu":
            env.pop("JAX_PLATFORMS")
    if memory:
        # a fixed threshold: large blocks are mmap'ed and unmapped on free, so the RSS follows
        # the live tensors (glibc's adaptive threshold would keep freed blocks resident)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        # TensorFlow's oneDNN build pools large blocks in its own allocator, which would keep
        # the working set resident between iterations; this sends them to malloc too
        env["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = "1"
    return env


class Children:
    """Start bench child processes one at a time (timings must not share the CPU), each
    with a timeout; an interruption kills the one alive."""

    def __init__(self, workdir: str, device: str, progress: Callable[[str], None]):
        self.workdir, self.device, self.progress = workdir, device, progress
        self.count = 0

    def run(self, mode: str, engine: str, sizes: str, *options: str, idiom: Optional[str] = None) -> dict:
        self.count += 1
        out = os.path.join(self.workdir, f"{self.count}.json")
        command = [sys.executable, "-m", "compare.bench", "--child", mode, engine, sizes, self.device, out, *options]
        if idiom:
            command += ["--idiom", idiom]
        started = time.monotonic()
        code, tail = run_process(command, bench_environment(engine, self.device, memory=mode == "memory"),
                                 CHILD_TIMEOUT, "[bench ", self.progress)
        if code is None:
            return {"status": "failed", "reason": f"no result within {CHILD_TIMEOUT:.0f} s", "stderr_tail": tail}
        try:
            with open(out, encoding="utf-8") as f:
                result = json.load(f)
        except (OSError, ValueError):
            result = None
        if code != 0 or not isinstance(result, dict):
            reason = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
            return {"status": "failed", "reason": reason, "stderr_tail": tail}
        result["seconds"] = time.monotonic() - started
        return result


def build_rows(engine: str, size: str, timing: dict, memory: Dict[str, dict], blocks: Optional[dict]) -> List[dict]:
    """One row per idiom: measured, predicted and whether they agree."""
    base_id = timing["baseline"]
    idioms = timing["idioms"]
    base = idioms[base_id]
    rows = []
    for idiom_id, data in idioms.items():
        samples = data["samples_s"]
        ratios = [s / b for s, b in zip(samples, base["samples_s"])]  # pair by pair, same repeat
        flops = evaluate(data["flops_formula"], blocks) if blocks else None
        base_flops = evaluate(base["flops_formula"], blocks) if blocks else None
        model_bytes = evaluate(data["memory_formula"], blocks) if blocks else None
        base_bytes = evaluate(base["memory_formula"], blocks) if blocks else None
        peak = (memory.get(idiom_id) or {}).get("peak_bytes")
        base_peak = (memory.get(base_id) or {}).get("peak_bytes")
        measured_mem = peak / base_peak if peak is not None and base_peak else None
        predicted = flops / base_flops if blocks else None
        predicted_mem = model_bytes / base_bytes if blocks else None
        rows.append({
            "engine": engine, "size": size, "idiom": idiom_id, "baseline": base_id, "status": "ok",
            "samples_ms": [s * 1e3 for s in samples], "iterations_per_sample": data["iterations_per_sample"],
            "ms_median": median(samples) * 1e3, "ms_iqr": iqr(samples) * 1e3,
            "ratios": ratios, "ratio_median": median(ratios), "ratio_iqr": iqr(ratios),
            "flops_formula": render(data["flops_formula"]), "flops_model": flops, "predicted_ratio": predicted,
            "within_tolerance": within(median(ratios), predicted),
            "memory_formula": render(data["memory_formula"]), "memory_model_bytes": model_bytes,
            "peak_bytes": peak, "absolute_peak_bytes": (memory.get(idiom_id) or {}).get("absolute_peak_bytes"),
            "memory_method": (memory.get(idiom_id) or {}).get("method"),
            "memory_status": (memory.get(idiom_id) or {}).get("status"),
            "memory_ratio": measured_mem, "predicted_memory_ratio": predicted_mem,
            "memory_within_tolerance": within(measured_mem, predicted_mem),
            "facts": data["facts"],
        })
    return rows


# the report figures: (name, what differs from the cold run, the most times the floor it aims at)
REPORT_RUNS = (("cold", "an empty result cache", 5.0), ("warm", "again, nothing changed", 1.5),
               ("edited", "after an edit to one scenario", 2.5))
EDITED_SCENARIO = "scope.g_step"  # the catalog's first; --edit-scenario picks another
SUITE_AIMS = {"suite": 150.0, "torch": 40.0}  # seconds, on an idle 2-core machine


def import_seconds(engine: str, dtype: str, live=None) -> Tuple[float, Optional[int]]:
    """Wall time of an engine process that imports its framework and exits, and its status."""
    code = f"import importlib; importlib.import_module({ENGINES[engine].module!r})"
    began = time.monotonic()
    status, _ = run_process([sys.executable, "-c", code], child_environment(engine, dtype), DEFAULT_TIMEOUT,
                            "\0", lambda line: None, live)  # no progress lines to forward
    return time.monotonic() - began, status


CHECK_AIM = 3.0  # compare check against importing its two frameworks


def check_floor(engine: str, progress: Callable[[str], None], iterations: int = 10) -> dict:
    """Wall time of ``compare check`` on the toy pair for one Keras engine (no diagnosis: a faithful
    port has nothing to diagnose), against its floor: importing torch plus that engine's
    framework, in processes of their own, one after the other (the check starts the two
    together, so it can take less than its floor)."""
    from compare.check.run import check
    from compare.models.toy import nets

    torch_s, torch_status = import_seconds(REFERENCE, "float32")
    engine_s, engine_status = import_seconds(engine, "float32")
    floor = torch_s + engine_s
    progress(f"check floor: {floor:.1f} s (torch {torch_s:.1f} s, {engine} {engine_s:.1f} s); now timing the check")
    started = time.monotonic()
    result = check(nets.__file__, engines=[engine], iterations=iterations, diagnosis=False)
    seconds = time.monotonic() - started
    progress(f"check: {seconds:.1f} s ({result.verdict})")
    return {"engine": engine, "iterations": iterations, "floor_s": floor, "torch_import_s": torch_s,
            "engine_import_s": engine_s, "check_s": seconds, "ratio": seconds / floor if floor else None,
            "verdict": result.verdict, "import_failures": [e for e, s in ((REFERENCE, torch_status),
                                                                         (engine, engine_status)) if s != 0]}


def report_floor(engines: List[str], progress: Callable[[str], None], scenario: str = EDITED_SCENARIO) -> dict:
    """Wall time of ``python -m compare report`` and of its floor: the same engine processes
    (one per engine and dtype, as many at once as the report runs) importing their framework
    and exiting. The report adds the reference engine, so the floor does too. Measured back to
    back, with a result cache of its own: cold (the cache empty), warm (the same again) and
    edited (a copy of the package in which ``scenario``'s code changed)."""
    engines = ([REFERENCE] if REFERENCE not in engines and not ENGINES[REFERENCE].missing() else []) + engines
    pairs = [(e, d) for e in engines for d in ("float32", "float64")]
    failed: List[str] = []
    floor_engine_s: List[float] = []

    def work(pair, live) -> None:
        engine, dtype = pair
        seconds, status = import_seconds(engine, dtype, live)
        floor_engine_s.append(seconds)
        if status != 0:
            failed.append(f"{engine} {dtype}")

    progress(f"report floor: starting {len(pairs)} engine processes that import their framework and exit")
    started = time.monotonic()
    jobs = min(os.cpu_count() or 1, len(pairs))  # as many at once as the report runs (its default)
    in_parallel(pairs, jobs, work)
    floor = time.monotonic() - started
    progress(f"report floor: {floor:.1f} s")
    runs, account, stderr = [], None, ""
    with tempfile.TemporaryDirectory(prefix="compare-bench-report-") as workdir:
        edited_root = os.path.join(workdir, "package")
        edit_scenario(edited_root, scenario)
        for name, what, aim in REPORT_RUNS:
            out = os.path.join(workdir, name)
            progress(f"report, {what}: timing `python -m compare report`")
            seconds, status, stderr = time_report(edited_root if name == "edited" else ROOT, engines, out,
                                                  os.path.join(workdir, "cache"))
            runs.append({"name": name, "what": what, "seconds": seconds, "ratio": seconds / floor if floor else None,
                         "aim": aim, "exit_status": status})
            progress(f"report, {what}: {seconds:.1f} s (exit status {status})")
            if name == "cold":
                account = account_for(os.path.join(out, "results.json"))
    cold = runs[0]
    return {"engines": engines, "processes": len(pairs), "jobs": jobs, "floor_s": floor, "report_s": cold["seconds"],
            "ratio": cold["ratio"], "report_exit_status": cold["exit_status"], "runs": runs,
            "edited_scenario": scenario, "floor_engine_s": sum(floor_engine_s), "account": account,
            "floor_failures": failed, "report_stderr_tail": stderr.splitlines()[-STDERR_TAIL:]}


def copy_package(root: str) -> None:
    """A copy of the package, without its tests, as ``root``/compare: ``root`` is the copy's import root."""
    shutil.copytree(os.path.join(ROOT, "compare"), os.path.join(root, "compare"),
                    ignore=shutil.ignore_patterns("tests", "__pycache__"))


def edit_scenario(root: str, scenario: str) -> None:
    """A copy of the package under ``root`` in which every implementation of ``scenario`` has
    one line more (a comment): its code changed, nothing else did."""
    import inspect

    from compare.scenarios import catalog

    copy_package(root)
    functions = {id(f): f for f in catalog()[scenario].implementations.values()}.values()
    # the last in a file first, so that an inserted line moves none still to edit
    for fn in sorted(functions, key=lambda f: (inspect.getsourcefile(f), -inspect.getsourcelines(f)[1])):
        lines, first = inspect.getsourcelines(fn)
        path = os.path.join(root, os.path.relpath(inspect.getsourcefile(fn), ROOT))
        with open(path, encoding="utf-8") as f:
            text = f.readlines()
        # after the line that ends the signature, indented as the body
        end = first - 1 + next(i for i, line in enumerate(lines) if line.rstrip().endswith(":")
                               and not line.lstrip().startswith("@"))
        body = text[end + 1]
        text.insert(end + 1, body[:len(body) - len(body.lstrip())] + "# edited by compare bench\n")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(text)


def time_report(root: str, engines: List[str], out: str, cache_dir: str) -> Tuple[float, int, str]:
    """(seconds, exit status, stderr) of one ``python -m compare report`` of the package at ``root``."""
    env = dict(os.environ, COMPARE_CACHE_DIR=cache_dir,
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "compare", "report", "--out", out, "--quiet",
                             "--engines", ",".join(engines)], env=env, stdin=subprocess.DEVNULL,
                            cwd=root,  # `python -m` puts the working folder first on sys.path
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        _, stderr = proc.communicate()
    except BaseException:  # SIGTERM makes the report stop its own engine processes
        proc.terminate()
        proc.wait(60)
        raise
    return time.monotonic() - started, proc.returncode, stderr


def suite_times(progress: Callable[[str], None]) -> dict:
    """Wall time of the package's tests: all of them, and those of torch alone (``--engines torch``)."""
    out = {}
    for name, extra in (("suite", []), ("torch", ["--engines", "torch"])):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "compare", *extra]
        progress(f"tests: timing {' '.join(command[1:])} (minutes)")
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
                                  ROOT, os.environ.get("PYTHONPATH")]))))
        out[name] = {"command": "python " + " ".join(command[1:]), "seconds": time.monotonic() - started,
                     "aim_s": SUITE_AIMS[name], "exit_status": done.returncode,
                     "summary": (done.stdout.strip().splitlines() or [""])[-1]}
        progress(f"tests: {out[name]['seconds']:.1f} s ({out[name]['summary']})")
    return out


PHASES = ("import", "parity", "scenarios")  # what an engine process records in phase_seconds
COSTLIEST = 8  # scenarios named in the account


def account_for(results_path: str) -> Optional[dict]:
    """Where the report's engine-seconds went, from its own results.json: per process its
    import, parity stages and scenarios (what is left is interpreter start-up and writing
    the results), and per (scenario, engine) the seconds of all its runs."""
    try:
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None
    processes = []
    for engine, info in results["engines"].items():
        for dtype, run in info["runs"].items():
            phases = run.get("phase_seconds") or {}
            processes.append({"engine": engine, "dtype": dtype, "seconds": run["seconds"],
                              **{phase: phases.get(phase, 0.0) for phase in PHASES}})
    totals = {phase: sum(p[phase] for p in processes) for phase in ("seconds",) + PHASES}
    totals["other"] = totals["seconds"] - sum(totals[phase] for phase in PHASES)
    scenarios: Dict[Tuple[str, str], float] = {}
    for record in results["results"]:
        key = (record["scenario"], record["engine"])
        scenarios[key] = scenarios.get(key, 0.0) + (record.get("seconds") or 0.0)
    groups: Dict[str, Dict[str, float]] = {}
    for (scenario, engine), seconds in scenarios.items():
        group = groups.setdefault(engine, {})
        family = scenario.split(".")[0]
        group[family] = group.get(family, 0.0) + seconds
    costliest = sorted(scenarios.items(), key=lambda item: -item[1])[:COSTLIEST]
    return {"processes": processes, "engine_seconds": totals, "scenario_families": groups,
            "costliest_scenarios": [{"scenario": s, "engine": e, "seconds": t} for (s, e), t in costliest]}


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _ms(value: Optional[float]) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _agree(flag: Optional[bool]) -> str:
    return {True: "yes", False: "NO", None: ""}[flag]


def print_table(results: dict) -> None:
    if results["rows"]:
        print_idioms(results)
    from compare.report import report_timings

    for line in report_timings(results):
        print(line)
    for c in results.get("check_floor") or []:
        print(f"compare check, toy pair, {c['engine']}, {c['iterations']} iterations: {c['check_s']:.1f} s against a "
              f"floor of {c['floor_s']:.1f} s (importing torch {c['torch_import_s']:.1f} s, {c['engine']} "
              f"{c['engine_import_s']:.1f} s): {c['ratio']:.2f}x (aim: at most {CHECK_AIM:g}x); {c['verdict']}")


def print_idioms(results: dict) -> None:
    from tabulate import tabulate

    rows = []
    for r in results["rows"]:
        if r["status"] != "ok":
            rows.append([r["engine"], r["size"], r.get("idiom", ""), r["status"], r.get("reason", "")[:60]]
                        + [""] * 8)
            continue
        rows.append([r["engine"], r["size"], r["idiom"], _ms(r["ms_median"]), _ms(r["ms_iqr"]),
                     _fmt(r["peak_bytes"] / 2 ** 20, 1) if r["peak_bytes"] is not None else "",
                     _fmt(r["flops_model"] / 1e6, 1) if r["flops_model"] is not None else "",
                     _fmt(r["ratio_median"]) + (f" ({r['ratio_iqr']:.2f})" if r["ratio_iqr"] else ""),
                     _fmt(r["predicted_ratio"]), _agree(r["within_tolerance"]),
                     _fmt(r["memory_ratio"]), _fmt(r["predicted_memory_ratio"]), _agree(r["memory_within_tolerance"])])
    headers = ["engine", "size", "idiom", "ms/iter", "IQR ms", "peak MiB", "model MFLOP", "ratio (IQR)",
               "predicted", "within 25%", "mem ratio", "mem predicted", "mem within 25%"]
    print(tabulate(rows, headers, tablefmt="github", disable_numparse=True))
    print()
    print("ratio: median over repeats of (idiom / baseline) in the same repeat; baseline: detach (torch), "
          "custom-step (Keras). predicted: the idiom's FLOP formula over the baseline's (FLOPs counted with "
          "torch FlopCounterMode: convolutions only). peak MiB: "
          + results["memory_note"])
    formulas = {(r["engine"], r["idiom"]): (r["flops_formula"], r["memory_formula"], r.get("facts") or {})
                for r in results["rows"] if r["status"] == "ok"}
    if formulas:
        print()
        print(tabulate([[e, i, f, m, ", ".join(f"{k}: {v}" for k, v in facts.items())]
                        for (e, i), (f, m, facts) in formulas.items()],
                       ["engine", "idiom", "FLOP formula", "memory formula", "facts"], tablefmt="github"))
    for size, data in results["model"]["blocks"].items():
        flops = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in data.items() if not k[0] in "PA")
        memory = ", ".join(f"{k} {v / 2 ** 20:.2f} MiB" for k, v in data.items() if k[0] in "PA")
        print(f"\n{size} blocks: FLOPs {flops}; bytes {memory}")
    print()


MEMORY_NOTES = {
    "cpu": "growth of the resident set over the steady state during 2 iterations, one fresh process per "
           "(engine, size, idiom) (Linux: VmHWM reset via /proc/self/clear_refs after warm-up, glibc mmap "
           "threshold fixed at 64 KiB and TensorFlow's oneDNN allocator sent to malloc, so that freed tensors "
           "leave the RSS; else ru_maxrss); it counts native allocations too, but also allocator and page "
           "granularity and framework workspaces",
    "cuda": "peak of the framework's GPU allocator over its use at the start of 2 iterations, one fresh "
            "process per (engine, size, idiom)",
}


def _parse_sizes(text: str) -> List[str]:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [s for s in wanted if s not in SIZES]
    if unknown or not wanted:
        raise ValueError(f"unknown size {', '.join(unknown) or repr(text)}; valid sizes: {', '.join(SIZES)}")
    return [s for s in SIZES if s in wanted]


def parse_arguments(argv: List[str]) -> Tuple[argparse.Namespace, List[str], List[str]]:
    """(arguments, engines, sizes); a usage error exits with status 2 and one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        engines = parse_engines(args.engines)
        sizes = _parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    from compare.scenarios import catalog

    if args.edit_scenario not in catalog():
        parser.error(f"--edit-scenario: unknown scenario {args.edit_scenario}; valid scenarios: {', '.join(catalog())}")
    if args.report_only and not (args.report_floor or args.suite or args.check_floor):
        parser.error("--report-only needs --report-floor, --check-floor or --suite")
    if args.matrix and not os.path.isfile(os.path.join(args.matrix, "matrix.json")):
        parser.error(f"--matrix {args.matrix}: no matrix.json there (a `compare matrix` folder)")
    if args.device == "cuda" and not gpu_present():
        parser.error("--device cuda: no GPU is visible on this machine")
    if args.out:
        if os.path.isdir(args.out):
            parser.error(f"--out {args.out} is a folder; give a file name, e.g. {os.path.join(args.out, 'bench.json')}")
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            parser.error(f"cannot write --out {args.out}: folder missing or not writable")
    return args, engines, sizes


def main(argv: List[str]) -> int:
    """``compare bench`` with its own arguments (``compare bench --help``). Returns the exit
    status: 0 when every engine ran, 1 when one failed, 2 on a usage error (reported in one
    line on stderr), 130 when interrupted."""
    try:
        args, engines, sizes = parse_arguments(argv)
    except SystemExit as exc:  # argparse's way out (--help too): a status, not an exception
        return exc.code if isinstance(exc.code, int) else 2

    from compare.cli import progress_printer

    progress = progress_printer(args.quiet)
    if args.matrix:
        return matrix_bench(args.matrix, progress)
    installed = [e for e in engines if not ENGINES[e].missing()]
    for e in engines:
        if e not in installed and args.engines is None:
            progress(f"skipping {e}: {', '.join(ENGINES[e].missing())} not installed ({ENGINES[e].install})")
    rows: List[dict] = []
    if args.engines is not None:  # asked for by name: say why it did not run
        for e in engines:
            if e not in installed:
                rows.append({"engine": e, "size": "", "status": "unavailable",
                             "reason": f"{', '.join(ENGINES[e].missing())} not installed; {ENGINES[e].install}"})
    results = {"schema": SCHEMA, "settings": {"engines": installed, "sizes": sizes, "repeats": args.repeats,
                                              "warmup": args.warmup, "device": args.device,
                                              "tolerance": TOLERANCE, "memory_iterations": MEMORY_ITERATIONS,
                                              "sample_seconds": SAMPLE_SECONDS, "threads": 1},
               "environment": {"python": platform.python_version(), "platform": platform.platform(),
                               "cpu_count": os.cpu_count(), "machine": platform.machine()},
               "sizes": {s: SIZE_NOTES[s] for s in sizes},
               "model": {"blocks": {}, "block_meaning": BLOCKS, "direct_flops": {}, "note": ""},
               "memory_note": MEMORY_NOTES[args.device], "versions": {}, "rows": rows, "report_floor": None,
               "suite": None, "check_floor": None}
    options = ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    started = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory(prefix="compare-bench-") as workdir:
        children = Children(workdir, args.device, progress)
        try:
            if args.report_only:
                results["model"]["note"] = "no idiom was timed (--report-only)"
            elif ENGINES[REFERENCE].missing():
                results["model"]["note"] = "no predictions: FLOPs are counted with torch, which is not installed"
            else:
                counted = children.run("count", REFERENCE, ",".join(sizes))
                if counted["status"] == "ok":
                    for size, data in counted["sizes"].items():
                        results["model"]["blocks"][size] = data["blocks"]
                        results["model"]["direct_flops"][size] = data["direct_flops"]
                else:
                    results["model"]["note"] = f"no predictions: counting FLOPs failed ({counted.get('reason')})"
                    failed = counted["status"] == "failed"
            for engine in [] if args.report_only else installed:
                for size in sizes:
                    timing = children.run("time", engine, size, *options)
                    if timing["status"] != "ok":
                        failed |= timing["status"] == "failed"
                        progress(f"[bench {engine} {size}] {timing['status']}: {timing['reason']}")
                        rows.append({"engine": engine, "size": size, "status": timing["status"],
                                     "reason": timing["reason"], "stderr_tail": timing.get("stderr_tail", [])})
                        continue
                    results["versions"][engine] = timing["versions"]
                    memory = {}
                    for idiom in timing["idioms"]:
                        memory[idiom] = children.run("memory", engine, size, *options, idiom=idiom)
                        failed |= memory[idiom]["status"] == "failed"
                    rows.extend(build_rows(engine, size, timing, memory, results["model"]["blocks"].get(size)))
            if args.report_floor:
                results["report_floor"] = report_floor(installed, progress, args.edit_scenario)
            if args.check_floor:
                results["check_floor"] = [check_floor(e, progress) for e in installed if e != REFERENCE]
                failed |= any(c["verdict"] != "PASS" or c["import_failures"] for c in results["check_floor"])
            if args.suite:
                results["suite"] = suite_times(progress)
        except KeyboardInterrupt:
            print("compare bench: interrupted", file=sys.stderr)
            return 130
    results["seconds"] = time.monotonic() - started
    try:
        print_table(results)
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into e.g. head, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.out:
        write_json(args.out, results)
        progress(f"wrote {args.out}")
    return 1 if failed else 0


def matrix_bench(folder: str, progress: Callable[[str], None]) -> int:
    """The warm second run of a matrix against the report once per point, printed."""
    from compare.matrix import time_warm

    try:
        timed = time_warm(folder, progress)
    except KeyboardInterrupt:
        print("compare bench: interrupted", file=sys.stderr)
        return 130
    ratio = f"{timed['ratio']:.2f}x" if timed["ratio"] is not None else "no figure (no point ran without reuse)"
    print(f"matrix of {timed['points']} points, second run (environments and result cache warm): "
          f"{timed['warm_seconds']:.0f} s; {timed['environments_rebuilt']} environments made, "
          f"{timed['reused_runs']} of {timed['engine_runs']} engine runs reused")
    print(f"the report once per point ({timed['cold_points']} points, nothing reused): "
          f"{timed['report_once_per_point_seconds']:.0f} s")
    print(f"ratio: {ratio} (target: at most 1.5x)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
