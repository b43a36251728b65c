"""The result cache: an unchanged key reuses the stored run (no engine process starts), a
changed key or --fresh runs the engine again, and a damaged entry is a miss, never a crash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from compare import cache
from compare.engines import ENGINES
from compare.tests.locations import PACKAGE_PARENT, child_env

pytestmark = pytest.mark.slow


def report(out, cache_dir, *extra):
    args = [sys.executable, "-m", "compare", "report", "--engines", "torch", "--dtype", "float32", "--out", str(out),
            *extra]
    return subprocess.run(args, capture_output=True, text=True, cwd=PACKAGE_PARENT, timeout=1800,
                          env=child_env(COMPARE_CACHE_DIR=str(cache_dir)))


def run_of(out):
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return json.load(f)["engines"]["torch"]["runs"]["float32"]


def test_a_stored_run_is_reused_refreshed_and_never_trusted_when_damaged(tmp_path):
    if ENGINES["torch"].missing():
        pytest.skip("torch not installed")
    store = tmp_path / "cache"
    first = report(tmp_path / "a", store)
    assert first.returncode == 0, first.stderr
    assert "starting" in first.stderr and "reused" not in run_of(tmp_path / "a")

    again = report(tmp_path / "b", store)
    assert again.returncode == 0, again.stderr
    assert "starting" not in again.stderr  # no engine process
    assert run_of(tmp_path / "b")["reused"]["ran_at"]
    same = subprocess.run([sys.executable, "-m", "compare", "diff", str(tmp_path / "a" / "results.json"),
                           str(tmp_path / "b" / "results.json")], capture_output=True, text=True,
                          cwd=PACKAGE_PARENT, env=child_env())
    assert same.returncode == 0, same.stdout

    fresh = report(tmp_path / "c", store, "--fresh")
    assert fresh.returncode == 0 and "starting" in fresh.stderr and "reused" not in run_of(tmp_path / "c")

    (entry,) = [p for p in store.iterdir() if not p.name.startswith(".")]
    with open(entry / "arrays.npz", "r+b") as f:
        f.truncate(100)
    damaged = report(tmp_path / "d", store)
    assert damaged.returncode == 0, damaged.stderr
    assert "starting" in damaged.stderr and "reused" not in run_of(tmp_path / "d")


def test_the_key_changes_with_code_threads_and_dtype(tmp_path, monkeypatch):
    base = cache.key_fields("torch", "float32", 1, ["parity"])
    assert cache.key(base) == cache.key(cache.key_fields("torch", "float32", 1, ["parity"]))
    assert cache.key(base) != cache.key(cache.key_fields("torch", "float32", 2, ["parity"]))
    assert cache.key(base) != cache.key(cache.key_fields("torch", "float64", 1, ["parity"]))
    copy = tmp_path / "compare"
    shutil.copytree(cache.PACKAGE, copy, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    monkeypatch.setattr(cache, "PACKAGE", str(copy))
    before = cache.source_digest()
    with open(copy / "scenarios" / "scope.py", "a", encoding="utf-8") as f:
        f.write("\n# an edit\n")
    edited = cache.source_digest()
    assert edited != before
    with open(copy / "report.py", "a", encoding="utf-8") as f:  # rendering changes no observation
        f.write("\n# an edit\n")
    assert cache.source_digest() == edited
