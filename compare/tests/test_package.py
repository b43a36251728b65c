"""The package itself: no framework on import, the engine registry, the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from compare import DISTRIBUTION
from compare.engines import ENGINES, EngineSpec
from compare.runner import run_engines
from compare.tests.locations import PACKAGE_PARENT, child_env

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "jaxlib", "tf_keras")


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "compare", *args], capture_output=True, text=True, env=child_env(),
                          cwd=PACKAGE_PARENT, **kwargs)


def test_importing_compare_imports_no_framework():
    code = ("import sys, compare, compare.cli, compare.engines, compare.models.toy, compare.parity, "
            "compare.program, compare.report, compare.runner; "
            f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE_PARENT, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_framework_is_reported_unavailable_with_install_command(tmp_path, monkeypatch):
    fake = EngineSpec("torch", "compare.engines.torch.engine", ("no_such_framework_xyz",), ("torch",))
    monkeypatch.setitem(ENGINES, "torch", fake)
    runs = run_engines(["torch"], ["float64"], str(tmp_path))
    run = runs[("torch", "float64")]
    assert run.status == "unavailable"
    assert "no_such_framework_xyz not installed" in run.reason and f"pip install '{DISTRIBUTION}[torch]'" in run.reason


def test_unknown_engine_is_a_one_line_usage_error(tmp_path):
    out = run_cli("report", "--out", str(tmp_path), "--engines", "torch,pytorch-lightning")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "unknown engine pytorch-lightning" in out.stderr
    assert "keras-jax" in out.stderr and "Traceback" not in out.stderr


def test_unwritable_output_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_cli("report", "--out", str(blocker / "sub"), "--engines", "torch")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "cannot write" in out.stderr


def test_list_names_every_engine():
    out = run_cli("list")
    assert out.returncode == 0
    for engine in ENGINES:
        assert engine in out.stdout


@pytest.mark.slow  # starts an engine process of its own
def test_report_writes_results_and_markdown(tmp_path):
    if ENGINES["torch"].missing():
        pytest.skip("torch not installed")
    out = run_cli("report", "--out", str(tmp_path), "--engines", "torch", "--dtype", "float64", "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["schema"] == "compare.results/2"
    assert set(results) >= {"environment", "engines", "results", "parity"}
    assert results["engines"]["torch"]["runs"]["float64"]["status"] == "ok"
    assert "## Parity with PyTorch" in (tmp_path / "REPORT.md").read_text()


@pytest.mark.slow  # starts an engine process of its own
def test_run_prints_one_scenario(tmp_path):
    if ENGINES["torch"].missing():
        pytest.skip("torch not installed")
    out = run_cli("run", "scope.g_step", "--engines", "torch", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "optimizer_G.step()" in out.stdout and "overall" in out.stdout and "d-params-unchanged" in out.stdout


def test_run_unknown_scenario_lists_the_valid_ones():
    out = run_cli("run", "scope.nope")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "unknown scenario scope.nope" in out.stderr and "scope.g_step" in out.stderr


def test_conflicting_or_invalid_options_are_usage_errors(tmp_path):
    for args in (["report", "--out", str(tmp_path), "--jobs", "0"],
                 ["report", "--out", str(tmp_path), "--dtype", "float16"],
                 ["report", "--out", str(tmp_path), "--timeout", "-1"],
                 ["report"]):
        out = run_cli(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1, args


def _results(path, observations, parity=()):
    path.write_text(json.dumps({"schema": "compare.results/1", "results": observations, "parity": list(parity)}))
    return str(path)


def _obs(changed_d):
    return {"scenario": "scope.g_step", "engine": "torch", "init": "constant", "variant": "", "status": "ok",
            "error": None, "changed": {"G": {"params": ["G.conv.kernel"], "state": []},
                                       "D": {"params": changed_d, "state": []}},
            "steps": [], "claims": [{"claim": "c", "verdict": "holds" if not changed_d else "does-not-hold"}]}


def test_diff_exit_status_says_whether_anything_changed(tmp_path):
    same_a = _results(tmp_path / "a.json", [_obs([])])
    same_b = _results(tmp_path / "b.json", [_obs([])])
    moved = _results(tmp_path / "c.json", [_obs(["D.bn.gamma"])])
    out = run_cli("diff", same_a, same_b)
    assert out.returncode == 0 and "no observation" in out.stdout
    out = run_cli("diff", same_a, moved)
    assert out.returncode == 1
    assert "scope.g_step  torch  init=constant: D.bn.gamma: did not move -> moved" in out.stdout
    assert "scope.g_step  torch  init=constant: claim c: holds -> does-not-hold" in out.stdout


@pytest.mark.parametrize("content", ["{not json", '{"schema": "other/1", "results": []}', "[1, 2]",
                                     '{"schema": "compare.results/1", "results": 3, "parity": []}', None])
def test_diff_rejects_malformed_or_foreign_files_in_one_line(tmp_path, content):
    good = _results(tmp_path / "good.json", [_obs([])])
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    out = run_cli("diff", good, str(bad))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
