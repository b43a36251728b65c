"""``python -m compare matrix``: the report's scenarios and parity stages across framework versions.

A version point is a set of pinned packages (``compare/matrix_points.json`` by default). For
each point the matrix makes an isolated environment, cached under ``$COMPARE_ENV_DIR`` (else
``~/.cache/compare/envs``) in a folder named by a digest of the pins and built beside it, then
renamed into place, so a half-built one is never used; installs there only the pins and the
packages the report itself needs (with uv where it is installed, else venv and pip); runs
``python -m compare report`` there from this source tree; and keeps the point's results.json
as ``OUT/POINT/results.json``. ``OUT/matrix.json`` says, per point, what was pinned, what
installed, how long each part took, and why a point has no results where it has none (it
could not install or import). The changes between adjacent points are computed from these
files when the report and the guide are rendered (``compare.matrix_view``).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

from compare.engines import ENGINES, REFERENCE
from compare.runner import PACKAGE_ROOT, in_parallel, run_process

SCHEMA = "compare.matrix/1"
PACKAGE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_POINTS = os.path.join(PACKAGE, "matrix_points.json")
SUMMARY = "matrix.json"
INSTALL_TIMEOUT = 1800.0
REPORT_TIMEOUT = 3600.0
# what each line of points varies, and the engines a point of that line runs by default
LINES = {
    "keras": {"package": "keras", "name": "Keras",
              "engines": (REFERENCE, "keras-tensorflow", "keras-jax", "keras-torch")},
    "tf_keras": {"package": "tf-keras", "name": "tf_keras", "engines": (REFERENCE, "tf-keras")},
    "torch": {"package": "torch", "name": "PyTorch", "engines": (REFERENCE,)},
}
# installed versions the summary records (distribution names)
RECORDED = ("keras", "tensorflow-cpu", "tensorflow", "tf-keras", "jax", "jaxlib", "torch", "numpy", "ml-dtypes")
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION = re.compile(r"^[0-9][A-Za-z0-9.+!-]*$")


class MatrixError(ValueError):
    """A points file that cannot be used; the message is one line."""


def load_points(path: str) -> List[dict]:
    """The points of ``path``, checked: each has an id, a line, pins and engines."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such file")
    except IsADirectoryError:
        raise MatrixError(f"{path}: is a folder, not a points file")
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read ({exc.strerror or exc})")
    except (UnicodeDecodeError, ValueError) as exc:
        raise MatrixError(f"{path}: not JSON ({' '.join(str(exc).split())})")
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list) or not points:
        raise MatrixError(f'{path}: no "points" list')
    seen = set()
    out = []
    for i, point in enumerate(points):
        where = f"{path}: points[{i}]"
        if not isinstance(point, dict):
            raise MatrixError(f"{where} is not an object")
        pid, line, pins = point.get("id"), point.get("line"), point.get("pins")
        if not (isinstance(pid, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", pid)):
            raise MatrixError(f"{where}: id missing or not a folder name (letters, digits, . _ -)")
        if pid in seen:
            raise MatrixError(f"{where}: id {pid!r} appears twice")
        seen.add(pid)
        if line not in LINES:
            raise MatrixError(f"{where} ({pid}): line must be one of {', '.join(LINES)}")
        if not (isinstance(pins, dict) and pins and all(isinstance(k, str) and PIN.match(k) and isinstance(v, str)
                                                        and VERSION.match(v) for k, v in pins.items())):
            raise MatrixError(f"{where} ({pid}): pins must map package names to versions")
        if LINES[line]["package"] not in pins:
            raise MatrixError(f"{where} ({pid}): a {line} point must pin {LINES[line]['package']}")
        engines = point.get("engines", list(LINES[line]["engines"]))
        if not (isinstance(engines, list) and engines and all(e in ENGINES for e in engines)):
            raise MatrixError(f"{where} ({pid}): engines must be a list of engine ids ({', '.join(ENGINES)})")
        if REFERENCE not in engines:
            engines = [REFERENCE] + engines
        out.append({"id": pid, "line": line, "pins": dict(pins), "engines": engines,
                    "version": pins[LINES[line]["package"]], "why": str(point.get("why", ""))})
    return out


def env_folder() -> str:
    return os.environ.get("COMPARE_ENV_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "compare", "envs")


def env_digest(pins: Dict[str, str]) -> str:
    """What names a point's environment: its pins, the packages the report needs, the Python."""
    fields = {"pins": sorted(pins.items()), "requires": runtime_requirements(),
              "python": platform.python_version(), "machine": platform.machine()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def runtime_requirements() -> List[str]:
    """The packages ``compare report`` itself imports (this distribution's dependencies)."""
    try:
        requires = importlib.metadata.requires("gan-step-compare") or []
        return sorted(r for r in requires if "extra ==" not in r)
    except importlib.metadata.PackageNotFoundError:
        import tomllib  # a source checkout on Python 3.11+

        with open(os.path.join(PACKAGE_ROOT, "pyproject.toml"), "rb") as f:
            return sorted(tomllib.load(f)["project"]["dependencies"])


def installer() -> Optional[List[str]]:
    """The uv command, where uv is installed (beside this Python or on PATH)."""
    beside = os.path.join(os.path.dirname(sys.executable), "uv")
    found = beside if os.access(beside, os.X_OK) else shutil.which("uv")
    return [found] if found else None


def uv_index_options() -> List[str]:
    """pip's index settings from the environment, for uv, which does not read them itself."""
    options = ["--native-tls"]  # the system's certificates, as pip uses them
    for pip_name, flag in (("PIP_INDEX_URL", "--index-url"), ("PIP_EXTRA_INDEX_URL", "--extra-index-url"),
                           ("PIP_FIND_LINKS", "--find-links")):
        if not os.environ.get("UV_" + pip_name[4:]):
            for value in os.environ.get(pip_name, "").split():
                options += [flag, value]
    return options


def python_of(env: str) -> str:
    return os.path.join(env, "bin", "python")


def build_env(point: dict, target: str, live=None) -> Optional[str]:
    """Make the point's environment at ``target``: built in a folder beside it and renamed into
    place when complete. Returns None, or why it could not be built (one line)."""
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    for stale in os.listdir(parent):  # an interrupted build of these pins is never used: remove it
        if stale.startswith(f".build-{os.path.basename(target)}-") and \
                time.time() - os.path.getmtime(os.path.join(parent, stale)) > INSTALL_TIMEOUT:
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    staging = tempfile.mkdtemp(prefix=f".build-{os.path.basename(target)}-", dir=parent)
    packages = [f"{name}=={version}" for name, version in sorted(point["pins"].items())] + runtime_requirements()
    uv = installer()
    if uv:
        steps = [uv + ["venv", "--quiet", "--python", sys.executable, staging],
                 uv + ["pip", "install", "--quiet", "--python", python_of(staging)] + uv_index_options() + packages]
    else:
        steps = [[sys.executable, "-m", "venv", staging],
                 [python_of(staging), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"] + packages]
    try:
        for command in steps:
            code, tail = run_process(command, dict(os.environ), INSTALL_TIMEOUT, "\0", lambda line: None, live)
            if code != 0:
                detail = next((line.strip() for line in reversed(tail) if line.strip()), "")
                what = "timed out" if code is None else f"exited with status {code}"
                return f"{os.path.basename(command[0])} {command[1]} {what}: {detail}"[:600]
        if not os.path.isdir(target):  # else a build of the same pins finished first: use that one
            os.replace(staging, target)
            staging = None
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    return None


IMPORT_CHECK = """
import importlib, importlib.metadata, json, sys
versions = {}
for name in sys.argv[2].split(","):
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
for module in sys.argv[1].split(","):
    try:
        importlib.import_module(module)
    except Exception as exc:
        print(json.dumps({"versions": versions, "error": f"import {module}: {type(exc).__name__}: {exc}"}))
        sys.exit(0)
print(json.dumps({"versions": versions, "error": None}))
"""


def import_check(python: str, engines: List[str]) -> dict:
    """Which versions the environment holds and whether every engine's framework imports."""
    modules = sorted({m for e in engines for m in ENGINES[e].imports})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "TF_USE_LEGACY"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    try:
        done = subprocess.run([python, "-c", IMPORT_CHECK, ",".join(modules), ",".join(RECORDED)],
                              capture_output=True, text=True, env=env, timeout=600)
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"versions": {}, "error": f"the environment's Python did not run: {exc}"}
    found["error"] = " ".join(found["error"].split())[:600] if found["error"] else None
    return found


def run_point(point: dict, out_dir: str, dtype: str, progress: Callable[[str], None], rebuild: bool = False,
              live=None) -> dict:
    """One point: its environment (made or reused), the report there, its results.json kept."""
    from compare import cache

    entry = {k: point[k] for k in ("id", "line", "version", "pins", "engines", "why")}
    digest = env_digest(point["pins"])
    env = os.path.join(env_folder(), digest)
    started = time.monotonic()
    if rebuild or not os.path.isfile(python_of(env)):
        progress(f"[{point['id']}] making its environment ({', '.join(f'{k}=={v}' for k, v in point['pins'].items())})")
        problem = build_env(point, env, live)
        entry["environment"] = {"digest": digest, "made": "built", "seconds": round(time.monotonic() - started, 1)}
        if problem:
            progress(f"[{point['id']}] cannot install: {problem}")
            return dict(entry, status="install-failed", reason=problem)
    else:
        entry["environment"] = {"digest": digest, "made": "reused", "seconds": round(time.monotonic() - started, 1)}
    found = import_check(python_of(env), point["engines"])
    entry["installed"] = found["versions"]
    if found["error"]:
        progress(f"[{point['id']}] cannot import: {found['error']}")
        return dict(entry, status="import-failed", reason=found["error"])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"compare-matrix-{point['id']}-") as tmp:
        environ = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
                       COMPARE_CACHE_DIR=os.path.join(cache.folder(), "matrix", digest))
        command = [python_of(env), "-m", "compare", "report", "--out", tmp, "--engines", ",".join(point["engines"]),
                   "--dtype", dtype]
        code, tail = run_process(command, environ, REPORT_TIMEOUT, "[", lambda line: progress(f"[{point['id']}] {line}"), live)
        seconds = round(time.monotonic() - started, 1)
        produced = os.path.join(tmp, "results.json")
        if not os.path.isfile(produced):
            detail = next((line.strip() for line in reversed(tail) if line.strip()), "")
            return dict(entry, status="report-failed", seconds=seconds,
                        reason=f"compare report {'timed out' if code is None else f'exited with status {code}'}: {detail}")
        with open(produced, encoding="utf-8") as f:
            results = json.load(f)
        folder = os.path.join(out_dir, point["id"])
        os.makedirs(folder, exist_ok=True)
        copy_atomic(produced, os.path.join(folder, "results.json"))
    runs = [run for engine in results["engines"].values() for run in engine.get("runs", {}).values()]
    entry.update(status="ok" if code == 0 else "incomplete", seconds=seconds, results=f"{point['id']}/results.json",
                 reused_runs=sum(1 for run in runs if run.get("reused")), engine_runs=len(runs))
    if code != 0:
        entry["reason"] = "; ".join(f"{e} {d}: {run['status']}" for e, engine in results["engines"].items()
                                    for d, run in engine.get("runs", {}).items() if run.get("status") != "ok") \
            or "a parity check fails"
    return entry


def copy_atomic(source: str, target: str) -> None:
    with open(source, "rb") as f:
        data = f.read()
    write_atomic(target, data)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: a file beside it, fsynced, renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=os.path.dirname(path) or ".")
    try:
        os.chmod(tmp, 0o644)  # as an ordinary file, not mkstemp's owner-only mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_summary(out_dir: str, entries: List[dict], points_path: str, dtype: str, seconds: float) -> None:
    summary = {"schema": SCHEMA, "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "points_file": os.path.basename(points_path), "dtype": dtype, "seconds": round(seconds, 1),
               "python": platform.python_version(), "points": entries}
    write_atomic(os.path.join(out_dir, SUMMARY), (json.dumps(summary, indent=1) + "\n").encode())


def previous_entries(out_dir: str, dtype: str) -> Dict[str, dict]:
    """The entries of the summary already in ``out_dir`` (for the same dtype), by point id."""
    try:
        with open(os.path.join(out_dir, SUMMARY), encoding="utf-8") as f:
            summary = json.load(f)
        if summary.get("schema") == SCHEMA and summary.get("dtype") == dtype:
            return {e["id"]: e for e in summary["points"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def run_matrix(points: List[dict], out_dir: str, points_path: str, jobs: int = 1, dtype: str = "both",
               progress: Callable[[str], None] = lambda line: None, rebuild: bool = False,
               order: Optional[List[dict]] = None) -> List[dict]:
    """Every point, ``jobs`` at a time; the summary is rewritten (whole) as each point ends.
    With ``order`` (every point of the file, of which ``points`` are to run), the summary keeps
    the earlier entries of the points not run this time, in the file's order."""
    os.makedirs(out_dir, exist_ok=True)
    started = time.monotonic()
    ids = {p["id"] for p in points}
    done: Dict[str, dict] = {pid: e for pid, e in previous_entries(out_dir, dtype).items()
                             if order and pid not in ids and pid in {p["id"] for p in order}}
    points_in_order = order or points

    def work(point: dict, live) -> None:
        entry = run_point(point, out_dir, dtype, progress, rebuild, live)
        progress(f"[{point['id']}] {entry['status']}" + (f": {entry['reason']}" if entry.get("reason") else ""))
        done[point["id"]] = entry
        write_summary(out_dir, [done[p["id"]] for p in points_in_order if p["id"] in done], points_path, dtype,
                      time.monotonic() - started)

    in_parallel(points, jobs, work)
    entries = [done[p["id"]] for p in points_in_order if p["id"] in done]
    write_summary(out_dir, entries, points_path, dtype, time.monotonic() - started)
    return entries


def time_warm(folder: str, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Run the matrix of ``folder``'s summary again (its points, its dtype) into a temporary
    folder, timed, against the time its reports took when none reused a stored run (the
    report once per point, the environments made beforehand)."""
    with open(os.path.join(folder, SUMMARY), encoding="utf-8") as f:
        summary = json.load(f)
    points = [{k: e[k] for k in ("id", "line", "version", "pins", "engines", "why")} for e in summary["points"]]
    cold = [e for e in summary["points"] if e.get("results") and e.get("reused_runs") == 0]
    with tempfile.TemporaryDirectory(prefix="compare-matrix-warm-") as out:
        started = time.monotonic()
        entries = run_matrix(points, out, summary.get("points_file", ""), dtype=summary["dtype"], progress=progress)
        warm = time.monotonic() - started
    once = sum(e["seconds"] for e in cold)
    return {"points": len(points), "warm_seconds": round(warm, 1), "report_once_per_point_seconds": round(once, 1),
            "cold_points": len(cold), "ratio": round(warm / once, 3) if once else None,
            "environments_rebuilt": sum(1 for e in entries if e.get("environment", {}).get("made") == "built"),
            "reused_runs": sum(e.get("reused_runs", 0) for e in entries),
            "engine_runs": sum(e.get("engine_runs", 0) for e in entries)}
