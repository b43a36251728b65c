"""Start engine child processes, in parallel, each with a timeout, and collect what they wrote.

The parent imports no framework. Each (engine, dtype) runs in its own process because
Keras fixes its backend and JAX its float64 switch when first imported.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from compare.engines import ENGINES

DEFAULT_TIMEOUT = 900.0
STDERR_TAIL = 30


@dataclasses.dataclass
class EngineRun:
    engine: str
    dtype: str
    status: str  # ok, unavailable, failed, timeout
    reason: str = ""
    facts: Optional[dict] = None
    arrays_path: Optional[str] = None
    seconds: float = 0.0
    stderr_tail: List[str] = dataclasses.field(default_factory=list)
    reused: Optional[dict] = None  # where parts came from the result cache: which, and when they ran

    @property
    def facts_path(self) -> Optional[str]:
        return os.path.join(os.path.dirname(self.arrays_path), "facts.json") if self.arrays_path else None

    def arrays(self):
        import numpy as np

        return np.load(self.arrays_path) if self.arrays_path else None


# Variables that change what a framework computes or where (backend, float64, devices, thread
# pools, kernels). The runner removes every one of them from the caller's environment and
# sets its own, so that a run does not depend on the shell it was started from.
CONTROLLED_PREFIXES = ("KERAS_", "JAX_", "XLA_", "TF_", "TORCH", "PYTORCH_", "CUDA_", "OMP_", "MKL_", "KMP_",
                       "OPENBLAS_", "BLIS_", "GOTO_", "VECLIB_", "NUMEXPR_", "DNNL_", "ONEDNN_", "ATEN_",
                       "NVIDIA_", "HIP_", "ROCR_", "TPU_", "MPLBACKEND")
CONTROLLED = ("PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONOPTIMIZE")
KEPT = ("COMPARE_FAULT_INJECT",)  # the tests' fault injection must reach the engine


# the folder holding this copy of compare: every process we start imports the same one
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def controlled(name: str) -> bool:
    return name in CONTROLLED or name.startswith(CONTROLLED_PREFIXES)


def removed_variables(environ: Optional[Dict[str, str]] = None) -> List[str]:
    """The caller's variables that the runner does not pass to the engines (names only)."""
    environ = os.environ if environ is None else environ
    return sorted(name for name in environ if controlled(name))


def child_environment(engine: str, dtype: str, threads: int = 1) -> Dict[str, str]:
    """The environment an engine process starts from: the caller's, less every variable that
    changes a framework's behaviour, plus the runner's own settings."""
    env = {name: value for name, value in os.environ.items() if not controlled(name)}
    env.update({
        "PYTHONHASHSEED": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's start-up chatter would bury the progress lines
        "CUDA_VISIBLE_DEVICES": "",  # parity runs are on the CPU
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "COMPARE_THREADS": str(threads),
        "MPLBACKEND": "Agg",
    })
    env.update(ENGINES[engine].child_env(dtype, threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    return env


class Guardian:
    """A small process that outlives this one (see ``compare.guardian``): it kills the
    engine process groups and removes the temporary folders still registered when this
    process ends, however it ends. Started on first use, one per process."""

    _instance: Optional["Guardian"] = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "compare.guardian"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                                     env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
                                         PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))),
                                     start_new_session=True)

    @classmethod
    def get(cls) -> "Guardian":
        with cls._lock:
            if cls._instance is None or cls._instance.proc.poll() is not None:
                cls._instance = Guardian()
            return cls._instance

    def tell(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # the guardian is gone: nothing more it can do
            pass


@contextlib.contextmanager
def workspace(prefix: str = "compare-") -> Iterator[str]:
    """A temporary folder for the engines' results that is removed when the block ends, and
    by the guardian if this process dies first."""
    path = tempfile.mkdtemp(prefix=prefix)
    guardian = Guardian.get()
    guardian.tell(f"+dir {path}")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        guardian.tell(f"-dir {path}")


class Live:
    """The processes a pool has started, and whether it is stopping: a process is started
    and registered under the lock, so none can start after the pool was told to stop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping = False
        self.procs: Dict[int, subprocess.Popen] = {}

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            procs = list(self.procs.values())
        for proc in procs:
            kill(proc)


class Stopped(Exception):
    """The pool was stopped before this process could start."""


def _run_child(engine: str, dtype: str, workdir: str, timeout: float, progress: Callable[[str], None],
               live: Live, options: List[str], threads: int) -> EngineRun:
    out_dir = os.path.join(workdir, f"{engine}-{dtype}")
    os.makedirs(out_dir, exist_ok=True)
    started = time.monotonic()
    code, tail = run_process([sys.executable, "-m", "compare.child", engine, dtype, out_dir, *options],
                             child_environment(engine, dtype, threads), timeout, f"[{engine} ", progress, live)
    if code is None:
        return EngineRun(engine, dtype, "timeout", f"no result within {timeout:.0f} s",
                         seconds=time.monotonic() - started, stderr_tail=tail)
    seconds = time.monotonic() - started
    facts_path = os.path.join(out_dir, "facts.json")
    if code != 0 or not os.path.exists(facts_path):
        reason = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
        return EngineRun(engine, dtype, "failed", reason, seconds=seconds, stderr_tail=tail)
    try:
        with open(facts_path) as f:
            facts = json.load(f)
        check_facts(facts)
    except (OSError, ValueError) as exc:
        return EngineRun(engine, dtype, "failed", f"unreadable result: {exc}", seconds=seconds,
                         stderr_tail=tail)
    return EngineRun(engine, dtype, "ok", facts=facts, arrays_path=os.path.join(out_dir, "arrays.npz"),
                     seconds=seconds, stderr_tail=tail)


def run_process(command: List[str], env: Dict[str, str], timeout: float, progress_prefix: str,
                progress: Callable[[str], None], live: Optional[Live] = None) -> Tuple[Optional[int], List[str]]:
    """Run a child in a process group of its own; forward its stderr lines that start with
    ``progress_prefix`` and keep the last ones. Returns (exit status, or None when it ran past
    ``timeout`` and was killed; stderr tail). Interrupted, it kills the child and re-raises.

    The child's stdin is a pipe this process never writes: the child watches it and ends
    itself when it closes (this process died). The guardian covers the rest."""
    live = live if live is not None else Live()
    guardian = Guardian.get()
    with live.lock:
        if live.stopping:
            raise Stopped()
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env, text=True, errors="replace", start_new_session=True)
        live.procs[proc.pid] = proc
    guardian.tell(f"+pid {proc.pid}")
    tail: Deque[str] = collections.deque(maxlen=STDERR_TAIL)

    def pump() -> None:
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            if line.startswith(progress_prefix):
                progress(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: Optional[int] = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        code = None
    except BaseException:
        kill(proc)
        raise
    finally:
        with live.lock:
            live.procs.pop(proc.pid, None)
        guardian.tell(f"-pid {proc.pid}")
        proc.stdin.close()
    reader.join(5)
    return code, list(tail)


def kill(proc: subprocess.Popen) -> None:
    """Kill the child and anything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def check_facts(facts) -> None:
    """A child's result must have the shape the parent reads; anything else is garbage."""
    if not isinstance(facts, dict):
        raise ValueError("not a JSON object")
    for key, kind in (("versions", dict), ("configs", dict), ("dtype", str)):
        if not isinstance(facts.get(key), kind):
            raise ValueError(f"missing or malformed field {key!r}")
    if facts["configs"] and not isinstance(facts.get("bn_estimator"), dict):  # parity ran: its probes must be there
        raise ValueError("missing or malformed field 'bn_estimator'")


def run_engines(engines: List[str], dtypes: List[str], workdir: str, jobs: Optional[int] = None,
                timeout: float = DEFAULT_TIMEOUT, progress: Callable[[str], None] = lambda line: None,
                parity: bool = True, scenarios: Optional[List[str]] = None, threads: int = 1,
                timeouts: Optional[Dict[str, float]] = None, skip: Optional[set] = None,
                parts: Optional[Dict[Tuple[str, str], Tuple[bool, Optional[List[str]]]]] = None,
                ) -> Dict[Tuple[str, str], EngineRun]:
    """Run every (engine, dtype) pair; an engine that is not installed is reported, not run.
    ``parity=False`` skips the parity stages; ``scenarios`` limits the scenarios run (an empty
    list: none); ``parts`` sets both per pair instead; ``threads`` is each framework's thread
    count; ``timeouts`` overrides ``timeout`` per engine; the (engine, dtype) pairs in ``skip``
    are not run (the caller has them already)."""
    def options(pair: Tuple[str, str]) -> List[str]:
        run_parity, only = (parts or {}).get(pair, (parity, scenarios))
        return ([] if run_parity else ["--no-parity"]) + ([] if only is None else ["--scenarios", ",".join(only)])

    timeouts = timeouts or {}
    runs: Dict[Tuple[str, str], EngineRun] = {}
    todo = []
    for engine in engines:
        spec = ENGINES[engine]
        missing = spec.missing()
        for dtype in dtypes:
            if skip and (engine, dtype) in skip:
                continue
            if missing:
                runs[(engine, dtype)] = EngineRun(
                    engine, dtype, "unavailable",
                    f"{', '.join(missing)} not installed; install with: {spec.install}")
            else:
                todo.append((engine, dtype))
    # longest first, so that the last process to finish is a short one
    queue = sorted(todo, key=lambda job: (-ENGINES[job[0]].relative_cost, job[1] != "float32"))

    def work(job: Tuple[str, str], live: Live) -> None:
        engine, dtype = job
        progress(f"[{engine} {dtype}] starting")
        run = _run_child(engine, dtype, workdir, timeouts.get(engine, timeout), progress, live, options(job), threads)
        if run.status != "ok":
            progress(f"[{engine} {dtype}] {run.status}: {run.reason}")
        runs[job] = run

    in_parallel(queue, jobs, work)
    return {key: runs[key] for key in sorted(runs, key=lambda k: (list(ENGINES).index(k[0]), k[1]))}


def in_parallel(items: List, jobs: Optional[int], work: Callable[[Any, Live], None],
                live: Optional[Live] = None) -> None:
    """``work(item, live)`` for every item, in order, ``jobs`` at a time (default: one per CPU
    core). ``work`` starts its processes through ``run_process(..., live)``; interrupted, no
    process starts any more and every live one is killed. A pool inside another's work passes
    the outer ``live``, so that stopping the outer pool stops its processes too."""
    queue = list(items)
    lock = threading.Lock()
    live = live if live is not None else Live()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                item = queue.pop(0)
            try:
                work(item, live)
            except Stopped:
                return

    jobs = max(1, jobs or os.cpu_count() or 1)
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(jobs, len(queue)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # short waits keep the main thread responsive to signals
    except BaseException:  # interrupted: no process may outlive the run
        with lock:
            queue.clear()
        live.stop()
        for thread in threads:
            thread.join(5)
        raise
