"""The result cache: an unchanged key reuses the stored parts (no engine process starts), an
edit to one scenario re-runs that scenario alone, --fresh runs everything, and a damaged
entry is a miss, never a crash. Edits are made in a copy of the package, never in the tree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from compare import bench, cache
from compare.engines import ENGINES
from compare.tests.locations import child_env
from compare.tests.plugin import strip_timings


def package_copy(tmp_path):
    """A copy of the package (without its tests) in a folder of its own: the root of its imports."""
    bench.copy_package(str(tmp_path / "copy"))
    return tmp_path / "copy"


def edit(root, relative: str, old: str, new: str) -> None:
    path = root / "compare" / relative
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {relative}"
    path.write_text(text.replace(old, new), encoding="utf-8")


# the first line of scope.g_step's torch implementation: a comment added below it changes
# that function's source and nothing else
G_STEP_TORCH = "def g_step_torch(ctx):\n"


def keys(root) -> dict:
    """{engine dtype part: key} of every part of every engine run, computed by the copy at ``root``."""
    code = ("import json; from compare import cache; from compare.engines import ENGINES; print(json.dumps({"
            "f'{e} {d} {p}': cache.key(f) for e in ENGINES for d in ('float32', 'float64') "
            "for p, f in cache.part_fields(e, d, 1).items()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True,
                         env=dict(child_env(), PYTHONPATH=str(root)))
    return json.loads(out.stdout)


def changed(before: dict, after: dict) -> set:
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def test_each_edit_changes_the_keys_of_the_parts_that_run_the_code(tmp_path):
    from compare.scenarios import catalog

    def users(*names):
        """The scenario parts whose implementation reads one of ``names``."""
        return {f"{e} float32 scenario:{s.id}" for s in catalog().values() for e, fn in s.implementations.items()
                if set(names) & set(fn.__code__.co_names)}

    root = package_copy(tmp_path)
    before = keys(root)
    scenarios = {name.split(" ")[2] for name in before if name.startswith("torch float32 scenario:")}
    assert "scenario:scope.g_step" in scenarios and len(scenarios) > 5

    steps = [  # (file, old, new, the parts whose key must change)
        ("scenarios/scope.py", G_STEP_TORCH, G_STEP_TORCH + "    # an edit\n", {"torch float32 scenario:scope.g_step"}),
        # a helper of the freeze scenarios: exactly the scenarios whose code calls it, on every engine
        ("scenarios/freeze.py", "def record_moves(ctx, g_call: str, d_call: str) -> None:\n",
         "def record_moves(ctx, g_call: str, d_call: str) -> None:\n    # an edit\n", users("record_moves")),
        # a constant a scenario reads, and the scenarios whose helper reads it
        ("scenarios/freeze.py", "ITERATIONS = 10\n", "ITERATIONS = 11\n", users("ITERATIONS", "record_moves")),
        # the recorder runs in every scenario, not in the parity stages
        ("observe.py", "ROUNDING_BOUND = 2.0 ** -16\n", "ROUNDING_BOUND = 2.0 ** -16  # an edit\n",
         {name for name in before if " scenario:" in name}),
        # an engine's code: that engine's parts only; keras_common: every engine that builds on it
        ("engines/torch/engine.py", "import torch\n", "import torch  # an edit\n",
         {name for name in before if name.startswith("torch ")}),
        ("engines/keras_common/engine.py", "import numpy as np\n", "import numpy as np  # an edit\n",
         {name for name in before if not name.startswith("torch ")}),
        # the parent's rendering changes no observation
        ("report.py", "import contextlib\n", "import contextlib  # an edit\n", set()),
    ]
    for relative, old, new, expected in steps:
        edit(root, relative, old, new)
        after = keys(root)
        assert changed(before, after) == expected, relative
        before = after


def test_the_key_changes_with_threads_and_dtype():
    one = cache.part_fields("torch", "float32", 1)
    assert cache.key(one["parity"]) == cache.key(cache.part_fields("torch", "float32", 1)["parity"])
    assert cache.key(one["parity"]) != cache.key(cache.part_fields("torch", "float32", 2)["parity"])
    assert cache.key(one["parity"]) != cache.key(cache.part_fields("torch", "float64", 1)["parity"])
    assert set(cache.part_fields("torch", "float64", 1)) == {"parity"}  # scenarios run in float32 only


def report(root, out, store, *extra):
    args = [sys.executable, "-m", "compare", "report", "--engines", "torch", "--dtype", "float32", "--out", str(out),
            *extra]
    return subprocess.run(args, capture_output=True, text=True, cwd=root, timeout=1800,
                          env=dict(child_env(COMPARE_CACHE_DIR=str(store)), PYTHONPATH=str(root)))


def results_of(out):
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def run_of(out):
    return results_of(out)["engines"]["torch"]["runs"]["float32"]


def scenarios_run(stderr: str) -> list:
    """The scenarios the engine process ran, from its progress lines."""
    return re.findall(r"^\[torch float32 +[0-9.]+s\] scenario (\S+)$", stderr, re.M)


def same_observations(root, a, b):
    done = subprocess.run([sys.executable, "-m", "compare", "diff", str(a / "results.json"), str(b / "results.json")],
                          capture_output=True, text=True, cwd=root, env=dict(child_env(), PYTHONPATH=str(root)))
    assert done.returncode == 0, done.stdout


@pytest.mark.slow
def test_stored_parts_are_reused_rerun_after_an_edit_refreshed_and_never_trusted_when_damaged(tmp_path):
    if ENGINES["torch"].missing():
        pytest.skip("torch not installed")
    root, store = package_copy(tmp_path), tmp_path / "cache"
    first = report(root, tmp_path / "a", store)
    assert first.returncode == 0, first.stderr
    assert "starting" in first.stderr and "reused" not in run_of(tmp_path / "a")
    every = scenarios_run(first.stderr)
    assert "scope.g_step" in every and len(every) > 5

    again = report(root, tmp_path / "b", store)
    assert again.returncode == 0, again.stderr
    assert "starting" not in again.stderr  # no engine process
    reused = run_of(tmp_path / "b")["reused"]
    assert reused["ran_at"] and reused["ran"] == [] and set(reused["parts"]) == {"parity"} | {
        f"scenario:{s}" for s in every}
    same_observations(root, tmp_path / "a", tmp_path / "b")

    edit(root, "scenarios/scope.py", G_STEP_TORCH, G_STEP_TORCH + "    # an edit\n")
    edited = report(root, tmp_path / "c", store)
    assert edited.returncode == 0, edited.stderr
    assert "starting" in edited.stderr and scenarios_run(edited.stderr) == ["scope.g_step"]
    assert run_of(tmp_path / "c")["reused"]["ran"] == ["scenario:scope.g_step"]
    assert "ran scope.g_step" in (tmp_path / "c" / "REPORT.md").read_text()
    same_observations(root, tmp_path / "a", tmp_path / "c")

    fresh = report(root, tmp_path / "d", store, "--fresh")
    assert fresh.returncode == 0 and scenarios_run(fresh.stderr) == every and "reused" not in run_of(tmp_path / "d")
    # two real runs (the first and this one) give the same results apart from timings and dates
    assert strip_timings(results_of(tmp_path / "a")) == strip_timings(results_of(tmp_path / "d"))

    stored = keys(root)
    with open(store / stored["torch float32 parity"] / "arrays.npz", "r+b") as f:
        f.truncate(100)
    (store / stored["torch float32 scenario:scope.g_step"] / "facts.json").write_text('{"observations": [')
    damaged = report(root, tmp_path / "e", store)
    assert damaged.returncode == 0, damaged.stderr
    # the damaged parity entry and the damaged scenario run again, the rest is reused
    assert scenarios_run(damaged.stderr) == ["scope.g_step"]
    assert run_of(tmp_path / "e")["reused"]["ran"] == ["parity", "scenario:scope.g_step"]
    same_observations(root, tmp_path / "a", tmp_path / "e")
