"""Fault isolation: an engine that crashes, hangs, fails outside a scenario or writes
garbage is reported with its reason and stderr tail, every other engine still is, and
the exit status says the run was incomplete. Faults are injected with COMPARE_FAULT_INJECT.

No test here depends on how fast a healthy engine runs (only the faulty one gets a short
timeout), and none looks at processes it did not start: every run carries a token of its
own in its environment, and "left behind" means a process with that token. The faulty
engines are the tests' stand-ins (``compare.tests.fake_engine``, no framework, one per kind
of fault, all in one report): a fault at start-up comes before any framework import, and
garbage is the runner's concern, so a real framework would add only its import time. The
healthy engine is torch, the reference every report runs.
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

from compare.engines import ENGINES, TEST_ENGINES
from compare.tests.locations import PACKAGE_PARENT, child_env
from compare.tests.plugin import require_run, strip_timings

HEALTHY = "torch"
# the kinds of fault at the level of a whole engine process: (kind, status, reason)
KINDS = [("segfault", "failed", "killed by signal 11"), ("exit", "failed", "exited with status 7"),
         ("raise", "failed", "exited with status 3"), ("garbage", "failed", "unreadable result"),
         ("hang", "timeout", "no result within 5 s")]
FAULTY = {kind: f"fake-{kind}" for kind, _, _ in KINDS}  # a stand-in engine per kind
pytestmark = pytest.mark.slow


def needs(*engines):
    missing = [e for e in engines if ENGINES[e].missing()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


HEALTHY_TIMEOUT = 1800  # a healthy engine on a loaded machine is slow, never hung


def environment(tmp_path, fault=None):
    """The caller's environment with a token that marks every process of this run, and a
    temporary folder of the test's own."""
    env = child_env(COMPARE_TEST_TOKEN=uuid.uuid4().hex, TMPDIR=str(tmp_path / "tmp"),
                    **{TEST_ENGINES: ",".join(FAULTY.values())})
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


def report(out, fault=None, engines=HEALTHY, extra=(), **kwargs):
    env = environment(out.parent / f"{out.name}-env", fault)
    args = [sys.executable, "-m", "compare", "report", "--out", str(out), "--engines", engines,
            "--dtype", "float32", "--timeout", str(HEALTHY_TIMEOUT), "--quiet", *extra]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=PACKAGE_PARENT, **kwargs)


def test_engine_faults_are_isolated_and_reported(tmp_path):
    """One report with torch and an engine for each kind of fault: each faulty run has its
    status and reason, torch's run and its scenario cells are whole, and the report says the
    run was incomplete."""
    needs(HEALTHY)
    # only the hung engine gets a short timeout: the others (garbage runs the whole program) may be slow
    out = report(tmp_path, fault=",".join(f"{FAULTY[kind]}={kind}" for kind in FAULTY),
                 engines=",".join([HEALTHY, *FAULTY.values()]), extra=["--timeout", f"{FAULTY['hang']}=5"])
    assert out.returncode == 1, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    for kind, status, reason in KINDS:
        broken = results["engines"][FAULTY[kind]]["runs"]["float32"]
        assert broken["status"] == status and reason in broken["reason"], (kind, broken)
        if kind == "raise":
            assert any("injected failure outside any scenario" in line for line in broken["stderr_tail"])
        scenario_cells = {r["status"] for r in results["results"] if r["engine"] == FAULTY[kind]}
        assert scenario_cells <= {"failed", "not-applicable"}, kind
    assert results["engines"][HEALTHY]["runs"]["float32"]["status"] == "ok"
    assert all(r["status"] in ("ok", "raised", "not-applicable") for r in results["results"] if r["engine"] == HEALTHY)
    assert any(r["engine"] == HEALTHY and r["status"] == "ok" for r in results["results"])
    assert "Incomplete run" in (tmp_path / "REPORT.md").read_text()


def test_broken_scenario_is_failed_and_isolated(tmp_path):
    needs(HEALTHY)
    out = report(tmp_path, fault=f"{HEALTHY}=scenario:scope.g_step")
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
    # started as from a terminal: a shell that starts pytest in the background leaves SIGINT
    # ignored, and Python keeps an inherited SIG_IGN (Ctrl-C is then rightly not seen)
    proc = subprocess.Popen([sys.executable, "-m", "compare", "report", "--out", str(out), "--engines",
                             HEALTHY, "--dtype", "float32"], stderr=subprocess.PIPE, text=True, env=env, cwd=PACKAGE_PARENT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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


@pytest.mark.dtypes("float32")
@pytest.mark.parametrize("engine", ["keras-torch"])
def test_two_runs_give_identical_results_apart_from_timings(engine_runs, tmp_path, engine):
    """The session's run of a Keras engine and a second real one (not a stored copy), each
    with the session's torch run as reference, give the same results.json, parity records
    included, apart from timings and dates. (Two real torch runs are compared in test_cache.)"""
    from compare import parity, report
    from compare.observations import collect
    from compare.runner import run_engines

    engines = [HEALTHY, engine]
    first = {(e, "float32"): require_run(engine_runs, e, "float32") for e in engines}
    second = {**first, **run_engines([engine], ["float32"], str(tmp_path))}

    def results(runs):
        return report.build_results(engines, ["float32"], runs, parity.compare_runs(runs), collect(engines, runs))

    a, b = results(first), results(second)
    assert second[(engine, "float32")] is not first[(engine, "float32")]
    assert a["generated"] and b["engines"][engine]["runs"]["float32"]["seconds"] > 0
    assert a["parity"] and all(r["holds"] for r in a["parity"] if r["config"] == "parity")
    assert strip_timings(a) == strip_timings(b)
