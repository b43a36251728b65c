"""Fault isolation: an engine that crashes, hangs, fails outside a scenario or writes
garbage is reported with its reason and stderr tail, every other engine still is, and
the exit status says the run was incomplete. Faults are injected with COMPARE_FAULT_INJECT.

No test here depends on how fast a healthy engine runs (only the faulty one gets a short
timeout), and none looks at processes it did not start: every run carries a token of its
own in its environment, and "left behind" means a process with that token.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from compare.engines import ENGINES
from compare.tests.locations import PACKAGE_PARENT, child_env

HEALTHY, FAULTY = "torch", "keras-torch"
pytestmark = pytest.mark.slow


def needs(*engines):
    missing = [e for e in engines if ENGINES[e].missing()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


HEALTHY_TIMEOUT = 1800  # a healthy engine on a loaded machine is slow, never hung


def environment(tmp_path, fault=None):
    """The caller's environment with a token that marks every process of this run, and a
    temporary folder of the test's own."""
    env = child_env(COMPARE_TEST_TOKEN=uuid.uuid4().hex, TMPDIR=str(tmp_path / "tmp"))
    os.makedirs(env["TMPDIR"], exist_ok=True)
    env.pop("COMPARE_FAULT_INJECT", None)
    if fault:
        env["COMPARE_FAULT_INJECT"] = fault
    return env


def processes_with(token: str):
    """Pids of the processes whose environment carries ``token``: those this test started."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"COMPARE_TEST_TOKEN={token}".encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:  # gone, or not ours to read
            pass
    return found


def engine_processes(token: str):
    """The engine processes among them (``python -m compare.child``)."""
    found = []
    for pid in processes_with(token):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"compare.child" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def wait_until_gone(token: str, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_with(token)


def report(out, fault=None, faulty_timeout=None, engines=f"{HEALTHY},{FAULTY}", extra=(), **kwargs):
    env = environment(out.parent / f"{out.name}-env", fault)
    args = [sys.executable, "-m", "compare", "report", "--out", str(out), "--engines", engines,
            "--dtype", "float32", "--timeout", str(HEALTHY_TIMEOUT), "--quiet"]
    if faulty_timeout:
        args += ["--timeout", f"{FAULTY}={faulty_timeout}"]
    args += list(extra)
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=PACKAGE_PARENT, **kwargs)


@pytest.mark.parametrize("kind,status,reason", [
    ("segfault", "failed", "killed by signal 11"),
    ("exit", "failed", "exited with status 7"),
    ("raise", "failed", "exited with status 3"),
    ("garbage", "failed", "unreadable result"),
    ("hang", "timeout", "no result within 15 s"),
])
def test_engine_fault_is_isolated_and_reported(tmp_path, kind, status, reason):
    needs(HEALTHY, FAULTY)
    # only a hung engine gets a short timeout: the others (garbage runs the whole program) may be slow
    out = report(tmp_path, fault=f"{FAULTY}={kind}", faulty_timeout=15 if kind == "hang" else None)
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_interrupted_run_keeps_previous_report_and_leaves_nothing_behind(tmp_path, sig):
    """However the parent ends, within seconds no engine process of its run and no temporary
    folder is left, and the earlier report files are as they were."""
    needs(HEALTHY)
    out = tmp_path / "out"
    out.mkdir()
    old = {"results.json": '{"old": true}\n', "REPORT.md": "old report\n"}
    for name, text in old.items():
        (out / name).write_text(text)
    env = environment(tmp_path, fault=f"{HEALTHY}=hang")
    proc = subprocess.Popen([sys.executable, "-m", "compare", "report", "--out", str(out), "--engines",
                             HEALTHY, "--dtype", "float32"], stderr=subprocess.PIPE, text=True, env=env, cwd=PACKAGE_PARENT)
    deadline = time.monotonic() + 60
    while not engine_processes(env["COMPARE_TEST_TOKEN"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine_processes(env["COMPARE_TEST_TOKEN"]), "the engine process never started"
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)[1]
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, rest
        assert "interrupted" in rest and "Traceback" not in rest
    for name, text in old.items():
        assert (out / name).read_text() == text
    assert not [p for p in os.listdir(out) if p.startswith(".")]
    assert wait_until_gone(env["COMPARE_TEST_TOKEN"]) == []
    deadline = time.monotonic() + 10
    while os.listdir(env["TMPDIR"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert os.listdir(env["TMPDIR"]) == []


def test_no_process_starts_once_the_pool_is_stopped():
    """The race of a Ctrl-C landing while a worker starts the next engine: a process is started
    and registered under the pool's lock, so after stop() none can start."""
    from compare.runner import Live, Stopped, run_process

    live = Live()
    live.stop()
    with pytest.raises(Stopped):
        run_process([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), 60, "", print, live)
    assert live.procs == {}


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
        done = report(out, extra=["--fresh"])  # two real runs, not one run and its stored copy
        assert done.returncode == 0, done.stderr
    a = json.loads((first / "results.json").read_text())
    b = json.loads((second / "results.json").read_text())
    assert a["generated"] and a["engines"][FAULTY]["runs"]["float32"]["seconds"] > 0
    assert strip_timings(a) == strip_timings(b)
