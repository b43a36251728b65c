"""Fault isolation: an engine that crashes, hangs, fails outside a scenario or writes
garbage is reported with its reason and stderr tail, every other engine still is, and
the exit status says the run was incomplete. Faults are injected with COMPARE_FAULT_INJECT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from compare.engines import ENGINES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEALTHY, FAULTY = "torch", "keras-torch"


def needs(*engines):
    missing = [e for e in engines if ENGINES[e].missing()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def report(out, fault=None, timeout=60, engines=f"{HEALTHY},{FAULTY}", **kwargs):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("COMPARE_FAULT_INJECT", None)
    if fault:
        env["COMPARE_FAULT_INJECT"] = fault
    args = [sys.executable, "-m", "compare", "report", "--out", str(out), "--engines", engines,
            "--dtype", "float32", "--timeout", str(timeout), "--quiet"]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, **kwargs)


@pytest.mark.parametrize("kind,status,reason", [
    ("segfault", "failed", "killed by signal 11"),
    ("exit", "failed", "exited with status 7"),
    ("raise", "failed", "exited with status 3"),
    ("garbage", "failed", "unreadable result"),
    ("hang", "timeout", "no result within 15 s"),
])
def test_engine_fault_is_isolated_and_reported(tmp_path, kind, status, reason):
    needs(HEALTHY, FAULTY)
    out = report(tmp_path, fault=f"{FAULTY}={kind}", timeout=15)
    assert out.returncode == 1, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    broken = results["engines"][FAULTY]["runs"]["float32"]
    assert broken["status"] == status and reason in broken["reason"]
    if kind == "raise":
        assert any("injected failure outside any scenario" in line for line in broken["stderr_tail"])
    assert results["engines"][HEALTHY]["runs"]["float32"]["status"] == "ok"
    scenario_cells = {r["status"] for r in results["results"] if r["engine"] == FAULTY}
    assert scenario_cells <= {"failed", "not-applicable"}
    assert any(r["engine"] == HEALTHY and r["status"] == "ok" for r in results["results"])
    assert "Incomplete run" in (tmp_path / "REPORT.md").read_text()


def test_broken_scenario_is_failed_and_isolated(tmp_path):
    needs(HEALTHY)
    out = report(tmp_path, fault=f"{HEALTHY}=scenario:scope.g_step", engines=HEALTHY)
    results = json.loads((tmp_path / "results.json").read_text())
    by_scenario = {}
    for r in results["results"]:
        by_scenario.setdefault(r["scenario"], set()).add(r["status"])
    assert by_scenario["scope.g_step"] == {"failed"}
    assert by_scenario["scope.g_loss_d_optimizer"] == {"ok"}
    assert all("failed" not in statuses for sid, statuses in by_scenario.items() if sid != "scope.g_step")
    failed = next(r for r in results["results"] if r["scenario"] == "scope.g_step")
    assert failed["error"]["message"] == "injected failure in the scenario's own code"
    assert out.returncode == 0  # the engine itself completed; the failed cell says the rest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_keeps_previous_report_and_leaves_no_engine_behind(tmp_path, sig):
    needs(HEALTHY)
    old = {"results.json": '{"old": true}\n', "REPORT.md": "old report\n"}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
    env = dict(os.environ, PYTHONPATH=ROOT, COMPARE_FAULT_INJECT=f"{HEALTHY}=hang")
    proc = subprocess.Popen([sys.executable, "-m", "compare", "report", "--out", str(tmp_path), "--engines",
                             HEALTHY, "--dtype", "float32"], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stderr.readline()
    assert "starting" in line
    time.sleep(1.0)
    proc.send_signal(sig)
    rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    for name, text in old.items():
        assert (tmp_path / name).read_text() == text
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    left = subprocess.run(["pgrep", "-f", "compare.child torch float32"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def strip_timings(value):
    """results.json without what may differ between identical runs: timings and dates."""
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if k not in ("seconds", "phase_seconds", "generated")}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def test_two_runs_give_identical_results_apart_from_timings(tmp_path):
    needs(HEALTHY, FAULTY)
    first, second = tmp_path / "one", tmp_path / "two"
    for out in (first, second):
        done = report(out, timeout=300)
        assert done.returncode == 0, done.stderr
    a = json.loads((first / "results.json").read_text())
    b = json.loads((second / "results.json").read_text())
    assert a["generated"] and a["engines"][FAULTY]["runs"]["float32"]["seconds"] > 0
    assert strip_timings(a) == strip_timings(b)
