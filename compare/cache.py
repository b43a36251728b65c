"""A store of engine runs, so that `compare report` runs again only what changed.

An engine run (one engine, one dtype) is keyed by everything that decides what it observes:
the versions of the engine's packages and numpy, a digest of every source file of ours that
its process imports, the dtype, the thread count, the run's options, and the platform (CPU
model, machine, Python). A hit reuses the stored facts and arrays; anything else is a miss,
a damaged entry included. The store is ``$COMPARE_CACHE_DIR``, else ``~/.cache/compare``.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from typing import List, Optional

from compare.engines import ENGINES
from compare.runner import cpu_model

PACKAGE = os.path.dirname(os.path.abspath(__file__))
# what an engine process imports: the program, the recorder, the catalog and the engines; not
# the parent's rendering (report, html, guide, answers, diff), which never changes an observation
CHILD_SOURCES = ("__init__.py", "child.py", "program.py", "observe.py", "models", "port.py", "faults.py",
                 "scenarios", "engines")


def folder() -> str:
    return os.environ.get("COMPARE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "compare")


def source_digest() -> str:
    """sha256 over the names and bytes of every source file an engine process imports."""
    h = hashlib.sha256()
    for entry in CHILD_SOURCES:
        path = os.path.join(PACKAGE, entry)
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names if name.endswith(".py"))
        for file in sorted(files):
            h.update(os.path.relpath(file, PACKAGE).encode())
            with open(file, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def key_fields(engine: str, dtype: str, threads: int, options: List[str]) -> dict:
    versions = dict(ENGINES[engine].versions())
    try:
        versions["numpy"] = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        versions["numpy"] = None
    return {"engine": engine, "dtype": dtype, "threads": threads, "options": list(options), "versions": versions,
            "sources": source_digest(), "machine": platform.machine(), "cpu": cpu_model(),
            "python": platform.python_version()}


def key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def lookup(fields: dict) -> Optional[dict]:
    """The stored entry for ``fields`` ({"facts", "arrays_path", "ran_at", "seconds"}), or None
    when there is none or it is damaged."""
    from compare.runner import check_facts

    entry = os.path.join(folder(), key(fields))
    try:
        with open(os.path.join(entry, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        with open(os.path.join(entry, "facts.json"), encoding="utf-8") as f:
            facts = json.load(f)
        check_facts(facts)
        if meta.get("fields") != fields or not os.path.isfile(os.path.join(entry, "arrays.npz")):
            return None
        import numpy as np

        with np.load(os.path.join(entry, "arrays.npz")) as arrays:
            arrays.files  # a truncated archive fails here
    except Exception:  # anything damaged (a truncated archive raises BadZipFile) is a miss
        return None
    return {"facts": facts, "arrays_path": os.path.join(entry, "arrays.npz"), "ran_at": meta.get("ran_at"),
            "seconds": meta.get("seconds", 0.0)}


def store(fields: dict, facts_path: str, arrays_path: str, seconds: float) -> None:
    """Keep one finished run; the entry appears whole (renamed into place) or not at all.
    A store that cannot be written is skipped: the cache is an optimisation."""
    staging = None
    try:
        os.makedirs(folder(), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tmp-", dir=folder())
        shutil.copyfile(facts_path, os.path.join(staging, "facts.json"))
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
