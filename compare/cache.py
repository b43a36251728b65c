"""A store of engine results, so that `compare report` runs again only what changed.

An engine run (one engine, one dtype) is stored in parts, each under a key of its own: the
parity stages, and each scenario. Every key holds what decides the part's observations: the
versions of the engine's packages and numpy, the dtype, the thread count, the platform (CPU
model, machine, Python) and a digest of the code the part runs. The parity stages' code is
the engine process's shared modules and the engine's own folders; a scenario's is the
modules every scenario runs, the engine's folders, and the source of the scenario's
implementation for that engine with every function, class and constant of ours it reaches
by name. So an edit to one scenario re-runs that scenario alone, in each engine process
(which still starts), and reuses the rest. A damaged entry is a miss. The store is
``$COMPARE_CACHE_DIR``, else ``~/.cache/compare``.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import hashlib
import importlib.metadata
import inspect
import json
import os
import platform
import shutil
import tempfile
import types
from typing import Dict, List, Optional

from compare.engines import ENGINES
from compare.runner import EngineRun, cpu_model

PACKAGE = os.path.dirname(os.path.abspath(__file__))
# what every engine process imports for its parity stages; not the parent's rendering (report,
# html, guide, answers, diff), which never changes an observation
PARITY_SOURCES = ("__init__.py", "child.py", "program.py", "models", "port.py", "faults.py",
                  "engines/__init__.py", "engines/base.py")
# what every scenario runs besides its own code: the recorder and the catalog's machinery
SCENARIO_SOURCES = PARITY_SOURCES + ("observe.py", "scenarios/__init__.py")
PARITY = "parity"


def folder() -> str:
    return os.environ.get("COMPARE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "compare")


def files_digest(paths: List[str]) -> str:
    """sha256 over the names (relative to the package) and bytes of ``paths``."""
    h = hashlib.sha256()
    for path in sorted(set(paths)):
        h.update(os.path.relpath(path, PACKAGE).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def module_path(name: str) -> Optional[str]:
    """The source file of one of our modules, found without importing it."""
    base = os.path.join(PACKAGE, *name.split(".")[1:])
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def engine_files(engine: str) -> List[str]:
    """The engine's module and every module of compare.engines it imports, directly or not
    (tf-keras builds on keras-tensorflow, which builds on keras_common), with their packages'
    __init__ files: found from the import statements, importing nothing."""
    todo, files = [ENGINES[engine].module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for package in (".".join(parts[:i]) for i in range(3, len(parts))):
            files.add(module_path(package))
        path = module_path(name)
        if path is None or path in files:
            continue
        files.add(path)
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:  # a name imported may be a module too
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
        todo = [m for m in todo if m.startswith("compare.engines.") and module_path(m)]
    return sorted(f for f in files if f)


def shared_files(names) -> List[str]:
    """The named files, and every source file under a named folder."""
    files = []
    for name in names:
        path = os.path.join(PACKAGE, name)
        files += [path] if os.path.isfile(path) else sorted(
            os.path.join(root, n) for root, _, ns in os.walk(path) for n in ns if n.endswith(".py"))
    return files


def code_digest(fn) -> str:
    """sha256 over the source of ``fn`` and of every function and class of the scenario modules
    it reaches by name (transitively, through nested functions and closures too), and the
    value of every constant it reads. What it reaches in the shared modules is digested with
    them; modules such as numpy or a framework are covered by the versions."""
    h = hashlib.sha256()
    todo, seen = [fn], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        h.update(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}\n".encode())
        h.update(inspect.getsource(obj).encode())
        namespace = getattr(inspect.getmodule(obj), "__dict__", {})
        reached = [cell.cell_contents for cell in getattr(obj, "__closure__", None) or ()]
        for name in sorted(referenced_names(obj)):
            if name.startswith("compare."):  # imported inside a function
                reached.append(importlib.import_module(name) if name.startswith("compare.scenarios.") else name)
            elif name in namespace:
                value = namespace[name]
                if isinstance(value, (types.FunctionType, type, types.ModuleType)):
                    reached.append(value)
                else:
                    h.update(f"{name}={constant(value)}\n".encode())
        for value in reached:
            module = value if isinstance(value, str) else value.__name__ if isinstance(
                value, types.ModuleType) else getattr(value, "__module__", None) or ""
            if module.startswith("compare.scenarios."):  # another scenario module is read as a whole
                todo.append(value)
            elif module.startswith("compare.") and module_path(module):  # the whole file of another module
                h.update(files_digest([module_path(module)]).encode())
    return h.hexdigest()


def referenced_names(obj) -> set:
    """Every global name the code of ``obj`` (a function, class or module) may read."""
    if isinstance(obj, types.FunctionType):
        codes = [obj.__code__]
    else:
        codes = [compile(inspect.getsource(obj), "<source>", "exec")]
    names = set()
    while codes:
        code = codes.pop()
        names |= set(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def constant(value) -> str:
    """A text that changes when a constant's value does; objects without a stable text (a
    Scenario, a function held in a dict) count by their type only: their code is digested
    where they are defined."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(map(constant, value)) if isinstance(value, (set, frozenset)) else map(constant, value)
        return f"{type(value).__name__}({', '.join(items)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{constant(k)}: {constant(v)}" for k, v in value.items()) + "}"
    return type(value).__qualname__


def base_fields(engine: str, dtype: str, threads: int) -> dict:
    versions = dict(ENGINES[engine].versions())
    try:
        versions["numpy"] = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        versions["numpy"] = None
    return {"engine": engine, "dtype": dtype, "threads": threads, "versions": versions,
            "machine": platform.machine(), "cpu": cpu_model(), "python": platform.python_version()}


def part_fields(engine: str, dtype: str, threads: int) -> Dict[str, dict]:
    """The key fields of each part of one engine run: "parity", and in the scenarios' dtype
    "scenario:ID" for each scenario the engine implements."""
    from compare.program import SCENARIO_DTYPE
    from compare.scenarios import catalog

    base = base_fields(engine, dtype, threads)
    own = engine_files(engine)
    parts = {PARITY: {**base, "part": PARITY, "code": files_digest(shared_files(PARITY_SOURCES) + own)}}
    if dtype == SCENARIO_DTYPE:
        shared = files_digest(shared_files(SCENARIO_SOURCES) + own)
        for scenario in catalog().values():
            fn = scenario.implementations.get(engine)
            if fn is None:
                continue
            settings = constant({"inits": list(scenario.inits), "variants": list(scenario.variants),
                                 "dtype": scenario.dtype})
            parts[f"scenario:{scenario.id}"] = {**base, "part": f"scenario:{scenario.id}", "code": shared,
                                                "scenario": code_digest(fn), "settings": settings}
    return parts


def key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def lookup(fields: dict) -> Optional[dict]:
    """The stored entry for ``fields`` ({"facts", "arrays_path" (None for a scenario), "ran_at",
    "seconds"}), or None when there is none or it is damaged."""
    entry = os.path.join(folder(), key(fields))
    try:
        with open(os.path.join(entry, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        with open(os.path.join(entry, "facts.json"), encoding="utf-8") as f:
            facts = json.load(f)
        if meta.get("fields") != fields or not isinstance(facts, dict):
            return None
        arrays_path = None
        if fields["part"] == PARITY:
            from compare.runner import check_facts

            check_facts(facts)
            arrays_path = os.path.join(entry, "arrays.npz")
            import numpy as np

            with np.load(arrays_path) as arrays:
                arrays.files  # a truncated archive fails here
        elif not isinstance(facts.get("observations"), list) or not facts["observations"]:
            return None
    except Exception:  # anything damaged (a truncated archive raises BadZipFile) is a miss
        return None
    return {"facts": facts, "arrays_path": arrays_path, "ran_at": meta.get("ran_at"),
            "seconds": meta.get("seconds", 0.0)}


def store(fields: dict, facts: dict, arrays_path: Optional[str], seconds: float) -> None:
    """Keep one finished part; the entry appears whole (renamed into place) or not at all.
    A store that cannot be written is skipped: the cache is an optimisation."""
    staging = None
    try:
        os.makedirs(folder(), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tmp-", dir=folder())
        with open(os.path.join(staging, "facts.json"), "w", encoding="utf-8") as f:
            json.dump(facts, f)
        if arrays_path:
            shutil.copyfile(arrays_path, os.path.join(staging, "arrays.npz"))
        ran_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with open(os.path.join(staging, "meta.json"), "w", encoding="utf-8") as f:
            json.dump({"fields": fields, "ran_at": ran_at, "seconds": seconds}, f)
        target = os.path.join(folder(), key(fields))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    except OSError:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


@dataclasses.dataclass
class Plan:
    """What one engine run needs after looking in the store: the key fields of each part, the
    parts found, and what its process must still run (nothing at all when ``complete``)."""

    engine: str
    dtype: str
    fields: Dict[str, dict]
    hits: Dict[str, dict]

    @property
    def parity(self) -> bool:
        return PARITY not in self.hits

    @property
    def scenarios(self) -> List[str]:
        return [part.split(":", 1)[1] for part in self.fields if part != PARITY and part not in self.hits]

    @property
    def complete(self) -> bool:
        return len(self.hits) == len(self.fields)

    @property
    def reused(self) -> dict:
        """What results.json records: when the oldest reused part ran, when each did, and
        the parts this report runs."""
        return {"ran_at": min(h["ran_at"] for h in self.hits.values()),
                "parts": {part: hit["ran_at"] for part, hit in self.hits.items()},
                "ran": [part for part in self.fields if part not in self.hits]}


def plan(engine: str, dtype: str, threads: int, fresh: bool = False) -> Plan:
    fields = part_fields(engine, dtype, threads)
    hits = {} if fresh else {part: hit for part, f in fields.items() if (hit := lookup(f))}
    return Plan(engine, dtype, fields, hits)


def keep(plan: Plan, run: EngineRun) -> None:
    """Store the parts ``run`` (a process that ran what ``plan`` left to run) computed."""
    if run.status != "ok":
        return
    facts = dict(run.facts)
    observations = facts.pop("observations", [])
    if plan.parity:
        store(plan.fields[PARITY], facts, run.arrays_path, run.seconds)
    for scenario in plan.scenarios:
        mine = [o for o in observations if o["scenario"] == scenario]
        if mine:
            store(plan.fields[f"scenario:{scenario}"], {"observations": mine},
                  None, sum(o.get("seconds") or 0.0 for o in mine))


def merge(plan: Plan, run: Optional[EngineRun]) -> EngineRun:
    """One engine run from the stored parts and ``run`` (None where every part was stored),
    its observations in catalog order, saying which parts were reused and when they ran."""
    if run is not None and run.status != "ok":
        return run
    if not plan.hits:
        return run
    parity = plan.hits.get(PARITY)
    facts = dict(parity["facts"] if parity else run.facts)
    observations = []
    for part in plan.fields:
        if part == PARITY:
            continue
        scenario = part.split(":", 1)[1]
        hit = plan.hits.get(part)
        observations += hit["facts"]["observations"] if hit else [
            o for o in run.facts.get("observations", []) if o["scenario"] == scenario]
    if observations or "observations" in facts:
        facts["observations"] = observations
    if run is not None:  # this report's process: its own time and thread settings
        for name in ("seconds", "phase_seconds", "threads"):
            if name in run.facts:
                facts[name] = run.facts[name]
    return EngineRun(plan.engine, plan.dtype, "ok", facts=facts,
                     arrays_path=parity["arrays_path"] if parity else run.arrays_path,
                     # reused whole: the time of the process that made the parity part (or the scenarios)
                     seconds=run.seconds if run is not None else parity["seconds"] if parity else sum(
                         h["seconds"] for h in plan.hits.values()),
                     stderr_tail=run.stderr_tail if run is not None else [], reused=plan.reused)
