"""Start engine child processes, in parallel, each with a timeout, and collect what they wrote.

The parent imports no framework. Each (engine, dtype) runs in its own process because
Keras fixes its backend and JAX its float64 switch when first imported.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

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

    def arrays(self):
        import numpy as np

        return np.load(self.arrays_path) if self.arrays_path else None


def child_environment(engine: str, dtype: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONHASHSEED": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's start-up chatter would bury the progress lines
        "CUDA_VISIBLE_DEVICES": "",  # parity runs are on the CPU
        "OMP_NUM_THREADS": "1",
    })
    env.update(ENGINES[engine].child_env(dtype))
    # the child imports this very copy of compare, installed or not
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _run_child(engine: str, dtype: str, workdir: str, timeout: float, progress: Callable[[str], None],
               live: Dict[int, subprocess.Popen], options: List[str]) -> EngineRun:
    out_dir = os.path.join(workdir, f"{engine}-{dtype}")
    os.makedirs(out_dir, exist_ok=True)
    started = time.monotonic()
    code, tail = run_process([sys.executable, "-m", "compare.child", engine, dtype, out_dir, *options],
                             child_environment(engine, dtype), timeout, f"[{engine} ", progress, live)
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
                progress: Callable[[str], None],
                live: Optional[Dict[int, subprocess.Popen]] = None) -> Tuple[Optional[int], List[str]]:
    """Run a child in a process group of its own; forward its stderr lines that start with
    ``progress_prefix`` and keep the last ones. Returns (exit status, or None when it ran past
    ``timeout`` and was killed; stderr tail). Interrupted, it kills the child and re-raises."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, text=True, errors="replace", start_new_session=True)
    if live is not None:
        live[proc.pid] = proc
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
        if live is not None:
            live.pop(proc.pid, None)
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
                parity: bool = True, scenarios: Optional[List[str]] = None) -> Dict[Tuple[str, str], EngineRun]:
    """Run every (engine, dtype) pair; an engine that is not installed is reported, not run.
    ``parity=False`` skips the parity stages; ``scenarios`` limits the scenarios run."""
    options = ([] if parity else ["--no-parity"]) + (["--scenarios", ",".join(scenarios)] if scenarios else [])
    runs: Dict[Tuple[str, str], EngineRun] = {}
    todo = []
    for engine in engines:
        spec = ENGINES[engine]
        missing = spec.missing()
        for dtype in dtypes:
            if missing:
                runs[(engine, dtype)] = EngineRun(
                    engine, dtype, "unavailable",
                    f"{', '.join(missing)} not installed; install with: {spec.install}")
            else:
                todo.append((engine, dtype))
    # longest first, so that the last process to finish is a short one
    queue = sorted(todo, key=lambda job: (-ENGINES[job[0]].relative_cost, job[1] != "float32"))

    def work(job: Tuple[str, str], live: Dict[int, subprocess.Popen]) -> None:
        engine, dtype = job
        progress(f"[{engine} {dtype}] starting")
        run = _run_child(engine, dtype, workdir, timeout, progress, live, options)
        if run.status != "ok":
            progress(f"[{engine} {dtype}] {run.status}: {run.reason}")
        runs[job] = run

    in_parallel(queue, jobs, work)
    return {key: runs[key] for key in sorted(runs, key=lambda k: (list(ENGINES).index(k[0]), k[1]))}


def in_parallel(items: List, jobs: Optional[int], work: Callable[[Any, Dict[int, subprocess.Popen]], None]) -> None:
    """``work(item, live)`` for every item, in order, ``jobs`` at a time (default: one per CPU
    core). ``work`` registers the processes it starts in ``live`` (``run_process`` does);
    interrupted, no item is started any more and every live process is killed."""
    queue = list(items)
    lock = threading.Lock()
    live: Dict[int, subprocess.Popen] = {}

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                item = queue.pop(0)
            work(item, live)

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
        for proc in list(live.values()):
            kill(proc)
        raise
