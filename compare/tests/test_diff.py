"""``compare diff``: every change is reported, every malformed input is a one-line error.

Synthetic results files only: no engine runs.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from compare.diff import changes
from compare.observations import describe_change
from compare.tests.locations import BASELINE, PACKAGE_PARENT, child_env


def run_diff(*args, timeout=60, **kwargs):
    return subprocess.run([sys.executable, "-m", "compare", "diff", *args], capture_output="stdout" not in kwargs,
                          text=True, env=child_env(), cwd=PACKAGE_PARENT, timeout=timeout, **kwargs)


def changed(g=(), d=(), d_state=(), **extra):
    return {"G": {"params": list(g), "state": [], **extra}, "D": {"params": list(d), "state": list(d_state)}}


def obs(init="constant", variant="", **fields):
    record = {"scenario": "scope.g_step", "engine": "torch", "init": init, "variant": variant, "dtype": "float32",
              "status": "ok", "error": None, "changed": changed(["G.conv.kernel"]), "seconds": 0.01,
              "steps": [{"label": "loss.backward()", "changed": changed(),
                         "grads": {"D.conv1.bias": "nonzero", "G.conv.kernel": "nonzero"}},
                        {"label": "optimizer_G.step()", "changed": changed(["G.conv.kernel"])}],
              "claims": [{"claim": "d-params-unchanged", "text": "...", "source": "article-1", "verdict": "holds"}]}
    record.update(fields)
    return record


def parity(engine="keras-jax", stage="iteration.10", holds=True):
    return {"engine": engine, "reference": "torch", "dtype": "float32", "config": "parity", "stage": stage,
            "quantity": "param", "max_abs_diff": 1e-7, "holds": holds}


def results(observations=None, parity_records=None, schema="compare.results/1"):
    return {"schema": schema, "generated": "2024-01-01",
            "results": [obs()] if observations is None else observations,
            "parity": [parity(), parity("keras-tensorflow")] if parity_records is None else parity_records}


def write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def diff_files(tmp_path, old, new, *options):
    return run_diff(write(tmp_path / "old.json", old), write(tmp_path / "new.json", new), *options)


def assert_one_line_error(out, *fragments):
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("compare diff: error: "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    for fragment in fragments:
        assert fragment in out.stderr, out.stderr


# 1. A record that appears or disappears is a change.

def test_observation_only_in_one_file_is_a_change(tmp_path):
    out = diff_files(tmp_path, results([obs()]), results([obs(), obs("random")]))
    assert out.returncode == 1
    assert "scope.g_step  torch  init=random: only in the new run" in out.stdout
    out = diff_files(tmp_path, results([obs(), obs("random")]), results([obs()]))
    assert out.returncode == 1 and "init=random: only in the old run" in out.stdout


def test_removing_every_claim_is_a_change(tmp_path):
    out = diff_files(tmp_path, results([obs()]), results([obs(claims=[])]))
    assert out.returncode == 1
    assert "scope.g_step  torch  init=constant: claim d-params-unchanged: only in the old run" in out.stdout


def test_a_new_claim_is_a_change(tmp_path):
    extra = {"claim": "g-moves", "verdict": "holds"}
    out = diff_files(tmp_path, results([obs()]), results([obs(claims=obs()["claims"] + [extra])]))
    assert out.returncode == 1 and "claim g-moves: only in the new run" in out.stdout


def test_emptying_parity_is_a_change(tmp_path):
    out = diff_files(tmp_path, results(), results(parity_records=[]))
    assert out.returncode == 1
    assert "parity keras-jax float32 parity iteration.10 param: only in the old run" in out.stdout
    assert "parity keras-tensorflow float32 parity iteration.10 param: only in the old run" in out.stdout


def test_dropping_one_engines_parity_records_is_a_change(tmp_path):
    out = diff_files(tmp_path, results(), results(parity_records=[parity()]))
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == "parity keras-tensorflow float32 parity iteration.10 param: only in the old run"


# 2. Malformed files and records: exit 2, one line naming the file and the record.

def _without(record, field):
    return {k: v for k, v in record.items() if k != field}


MALFORMED = {
    "no status": (results([_without(obs(), "status")]), "results[0] (scope.g_step torch constant): field 'status'"),
    "variant null": (results([obs(variant=None)]), "results[0]: field 'variant'"),
    "claims 5": (results([obs(claims=5)]), "results[0] (scope.g_step torch constant): field 'claims'"),
    "empty step": (results([obs(steps=[{}])]), "results[0] (scope.g_step torch constant): steps[0]: field 'label'"),
    "error string": (results([obs(error="boom")]), "field 'error'"),
    "changed not lists": (results([obs(changed={"G": {"params": "G.conv.kernel"}})]), "changed.G.params"),
    "grads not strings": (results([obs(steps=[{"label": "x", "changed": changed(), "grads": {"a": 1}}])]), "grads"),
    "claim without verdict": (results([obs(claims=[{"claim": "c"}])]), "claims[0]"),
    "parity without holds": (results(parity_records=[_without(parity(), "holds")]),
                             "parity[0] (keras-jax float32 parity iteration.10 param): field 'holds'"),
    "parity holds a string": (results(parity_records=[parity(holds="yes")]), "field 'holds'"),
    "parity without engine": (results(parity_records=[_without(parity(), "engine")]), "parity[0]: field 'engine'"),
    "parity not a list": ({"schema": "compare.results/1", "results": [], "parity": {}}, "field 'parity'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_record_is_a_one_line_error_naming_file_and_record(tmp_path, case):
    data, fragment = MALFORMED[case]
    out = diff_files(tmp_path, results(), data)
    assert_one_line_error(out, "new.json: ", fragment)


@pytest.mark.parametrize("field", ["results", "parity"])
def test_duplicate_record_keys_are_an_error(tmp_path, field):
    data = results([obs(), obs()]) if field == "results" else results(parity_records=[parity(), parity()])
    out = diff_files(tmp_path, data, results())
    assert_one_line_error(out, "old.json: ", f"{field}[1]", f"duplicate of {field}[0]")


def test_duplicate_claims_are_an_error(tmp_path):
    out = diff_files(tmp_path, results(), results([obs(claims=obs()["claims"] * 2)]))
    assert_one_line_error(out, "claims[1]", "d-params-unchanged")


def test_deeply_nested_json_is_an_error(tmp_path):
    out = diff_files(tmp_path, results(), "[" * 100000 + "]" * 100000)
    assert_one_line_error(out, "new.json: ", "nested too deeply")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_unreadable_file_is_an_error(tmp_path):
    path = write(tmp_path / "locked.json", results())
    os.chmod(path, 0)
    try:
        out = run_diff(write(tmp_path / "old.json", results()), path)
    finally:
        os.chmod(path, 0o600)
    assert_one_line_error(out, "locked.json")


@pytest.mark.parametrize("kind", ["folder", "missing", "not utf-8"])
def test_paths_that_are_not_readable_results_are_errors(tmp_path, kind):
    path = tmp_path / "bad.json"
    if kind == "folder":
        path.mkdir()
    elif kind == "not utf-8":
        path.write_bytes(b'{"schema": "compare.results/1\xff"}')
    out = run_diff(write(tmp_path / "old.json", results()), str(path))
    assert_one_line_error(out, "bad.json")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    try:
        out = run_diff(write(tmp_path / "old.json", results()), str(fifo), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("compare diff waited on a FIFO")
    assert_one_line_error(out, "fifo.json: not a regular file")


@pytest.mark.parametrize("schema", ["compare.results/3", "compare.results/", "other/1", 2])
def test_unknown_schema_is_an_error(tmp_path, schema):
    out = diff_files(tmp_path, results(), results(schema=schema))
    assert_one_line_error(out, f"unknown schema version {json.dumps(schema)}",
                          "this compare reads compare.results/1, compare.results/2")


# 3, 4. What a change reads like.

def _changed_everything():
    new = obs()
    new["steps"][0]["grads"]["D.conv1.bias"] = "zero"
    new["steps"][1]["changed"] = changed(["G.conv.kernel"], ["D.conv1.kernel"])
    new["steps"][1]["label"] = "optimizer_D.step()"
    new["steps"].append({"label": "extra()", "changed": changed(), "error": {"type": "ValueError",
                                                                               "message": "bad <x at 0x7f3a2b>"}})
    new["claims"][0]["verdict"] = "does-not-hold"
    new["seconds"] = 5.0  # a timing: not a change
    raised = obs("random", status="raised", error={"type": "RuntimeError", "message": "at 0x7fff01\n second line"})
    return (results([obs(), obs("random"), obs(variant="x")], [parity(), parity("keras-tensorflow")]),
            results([new, raised, obs(variant="x")], [parity(holds=False), parity("keras-tensorflow")]))


def test_readable_output_is_one_line_per_change_and_a_count(tmp_path):
    out = diff_files(tmp_path, *_changed_everything())
    assert out.returncode == 1 and out.stderr == ""
    assert out.stdout.splitlines() == [
        "scope.g_step  torch  init=constant: step count: 2 -> 3",
        'scope.g_step  torch  init=constant  step 1 "loss.backward()": D.conv1.bias gradient: nonzero -> zero',
        'scope.g_step  torch  init=constant  step 2 "optimizer_D.step()": label: "optimizer_G.step()" -> '
        '"optimizer_D.step()"',
        'scope.g_step  torch  init=constant  step 2 "optimizer_D.step()": D.conv1.kernel: did not move -> moved',
        'scope.g_step  torch  init=constant  step 3 "extra()": only in the new run',
        "scope.g_step  torch  init=constant: claim d-params-unchanged: holds -> does-not-hold",
        "scope.g_step  torch  init=random: status ok -> raised (RuntimeError: at 0x? second line)",
        "parity keras-jax float32 parity iteration.10 param: holds -> does-not-hold",
        "8 changes: 6 in observations, 1 in claim verdicts, 1 in parity verdicts",
    ]


def test_variant_and_state_and_exception_phrases(tmp_path):
    old = obs(variant="x", steps=[{"label": "s", "changed": changed(d_state=["D.bn.moving_mean"])}])
    new = obs(variant="x", steps=[{"label": "s", "changed": changed(), "error": {"type": "E", "message": "m"}}])
    out = diff_files(tmp_path, results([old]), results([new]))
    assert out.stdout.splitlines()[:2] == [
        'scope.g_step  torch  init=constant  variant=x  step 1 "s": D.bn.moving_mean: changed -> did not change',
        'scope.g_step  torch  init=constant  variant=x  step 1 "s": exception: none -> E: m',
    ]


def test_json_output_lists_the_same_changes(tmp_path):
    old, new = _changed_everything()
    readable = diff_files(tmp_path, old, new)
    out = diff_files(tmp_path, old, new, "--json")
    assert out.returncode == 1 and out.stderr == ""
    found = json.loads(out.stdout)
    assert len(found) == len(readable.stdout.splitlines()) - 1
    keys = {"kind", "scenario", "engine", "init", "variant", "dtype", "config", "stage", "quantity", "step",
            "label", "what", "old", "new"}
    assert all(set(c) == keys for c in found)
    assert {"kind": "observation", "scenario": "scope.g_step", "engine": "torch", "init": "constant",
            "variant": "", "dtype": None, "config": None, "stage": None, "quantity": None, "step": 2,
            "label": "optimizer_D.step()", "what": "D.conv1.kernel", "old": "did not move", "new": "moved"} in found
    assert {"kind": "parity", "scenario": None, "engine": "keras-jax", "init": None, "variant": None,
            "dtype": "float32", "config": "parity", "stage": "iteration.10", "quantity": "param", "step": None,
            "label": None, "what": "verdict", "old": "holds", "new": "does-not-hold"} in found
    step3 = [c for c in found if c["step"] == 3]
    assert step3 == [dict(step3[0], what="step", old=None, new="extra()")]
    same = diff_files(tmp_path, old, old, "--json")
    assert same.returncode == 0 and json.loads(same.stdout) == []


def test_schema_2_rounding_kind_and_gradients(tmp_path):
    new = obs()
    new["changed"]["G"] = {"params": [], "state": [], "rounding": ["G.conv.kernel"]}
    new["steps"][0]["grads"]["G.conv.kernel"] = "rounding"
    for step in new["steps"]:
        for kinds in step["changed"].values():
            kinds.setdefault("rounding", [])
    out = diff_files(tmp_path, results([obs()]), results([new], schema="compare.results/2"))
    assert out.returncode == 1
    assert out.stdout.splitlines()[:2] == [
        "scope.g_step  torch  init=constant: G.conv.kernel: moved -> moved by rounding",
        'scope.g_step  torch  init=constant  step 1 "loss.backward()": G.conv.kernel gradient: nonzero -> rounding',
    ]
    unchanged = copy.deepcopy(obs())
    for kinds in unchanged["changed"].values():
        kinds["rounding"] = []  # an empty kind reads the same as an absent one
    out = diff_files(tmp_path, results([obs()]), results([unchanged], schema="compare.results/2"))
    assert out.returncode == 0, out.stdout


def test_nothing_changed_says_so(tmp_path):
    out = diff_files(tmp_path, results(), results())
    assert out.returncode == 0 and out.stdout == "no observation, claim verdict or parity verdict changed\n"


def test_committed_results_against_themselves_exit_0():
    out = run_diff(BASELINE, BASELINE)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert out.stdout.startswith("no observation")


# 5. Output that cannot be written.

@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("command", ["diff", "list"])
def test_full_disk_on_stdout_is_a_one_line_error(tmp_path, command):
    args = ["diff", write(tmp_path / "a.json", results()), write(tmp_path / "b.json", results([]))]
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "compare", *(args if command == "diff" else ["list"])],
                             stdout=full, stderr=subprocess.PIPE, text=True, cwd=PACKAGE_PARENT, timeout=60,
                             env=child_env())
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "cannot write to standard output" in out.stderr and "Traceback" not in out.stderr


def test_closed_pipe_on_stdout_is_quiet(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = run_diff(write(tmp_path / "a.json", results()), write(tmp_path / "b.json", results([])),
                       stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert out.stderr == "" and out.returncode == 0


# 6. The Python helpers other tests use.

def test_describe_change_joins_the_phrases():
    old, new = _changed_everything()
    phrases = describe_change(old["results"][0], new["results"][0]).split("; ")
    assert phrases[0] == "step count: 2 -> 3" and 'step 3 "extra()": only in the new run' in phrases
    assert describe_change(obs(), obs(seconds=9.0)) is None


def test_changes_returns_lines_for_each_change():
    old, new = _changed_everything()
    found = changes(old, new)
    assert [c.kind for c in found].count("claim") == 1
    assert found[-1].line() == "parity keras-jax float32 parity iteration.10 param: holds -> does-not-hold"
