"""The version matrix: which errors make a cell not-applicable, the points file, environments
that are used only when complete, a point that cannot install, and the changed-in view."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import types

import pytest

from compare import matrix, matrix_view
from compare.observe import missing_api
from compare.runner import PACKAGE_ROOT
from compare.tests.locations import BASELINE

# code compiled under a file name outside the package stands for a framework's own code
FRAMEWORK = {}
exec(compile("class Lazy:\n"
             "    def __getattr__(self, name):\n"
             "        raise AttributeError(f'module has no attribute {name!r}')\n"
             "def takes_nothing():\n"
             "    return None\n"
             "def calls_badly():\n"
             "    return takes_nothing(momentum=0.1)\n"
             "def raises_attribute():\n"
             "    return object().missing\n",
             os.path.join(os.sep, "framework", "module.py"), "exec"), FRAMEWORK)


def caught(call):
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("no exception")


def test_an_api_our_code_calls_and_this_version_lacks_is_not_applicable():
    lacks_attribute = caught(lambda: types.SimpleNamespace().no_such_function)
    assert "lacks an API" in missing_api(lacks_attribute)
    assert "test_matrix.py" in missing_api(lacks_attribute)
    lacks_keyword = caught(lambda: FRAMEWORK["takes_nothing"](momentum=0.1))
    assert "unexpected keyword argument" in missing_api(lacks_keyword)
    lazy_module = caught(lambda: FRAMEWORK["Lazy"]().no_such_function)  # a module's __getattr__ says it
    assert missing_api(lazy_module) is not None
    cannot_import = caught(lambda: __import__("compare.no_such_module"))
    assert missing_api(cannot_import) is not None


def test_an_error_the_framework_raises_is_an_observation_whatever_its_type():
    assert missing_api(caught(FRAMEWORK["calls_badly"])) is None  # a TypeError inside the framework
    assert missing_api(caught(FRAMEWORK["raises_attribute"])) is None  # an AttributeError inside it
    assert missing_api(caught(lambda: int("x"))) is None  # ValueError: never
    assert missing_api(caught(lambda: len(3))) is None  # a TypeError that is not about a signature


def torch_engine():
    pytest.importorskip("torch")
    import importlib

    engine = importlib.import_module("compare.engines.torch.engine").ENGINE
    engine.setup("float32", 1)
    return engine


def scenario_of(implementation):
    return types.SimpleNamespace(id="test.scenario", dtype="float32", implementations={"torch": implementation})


def test_a_scenario_that_calls_a_missing_api_is_not_applicable_and_a_raised_error_is_recorded():
    from compare.observe import observe

    engine = torch_engine()

    def uses_a_later_api(ctx):
        import torch

        with ctx.attempt("step"):
            torch.no_such_api_yet(ctx.G)

    record = observe(engine, scenario_of(uses_a_later_api), "constant")
    assert record["status"] == "not-applicable"
    assert "AttributeError" in record["reason"] and "uses_a_later_api" in record["reason"]

    def backward_twice(ctx):
        loss = ctx.loss(ctx.D(ctx.G(ctx.z)), ctx.y_real)
        loss.backward()
        with ctx.attempt("backward again"):
            loss.backward()

    record = observe(engine, scenario_of(backward_twice), "constant")
    assert record["status"] == "raised" and record["error"]["type"] == "RuntimeError"


def write_points(tmp_path, points) -> str:
    path = tmp_path / "points.json"
    path.write_text(json.dumps({"points": points}))
    return str(path)


@pytest.mark.parametrize("points, says", [
    ([{"id": "a", "line": "keras", "pins": {"jax": "0.4.23"}}], "must pin keras"),
    ([{"id": "a", "line": "cobol", "pins": {"keras": "3.0.0"}}], "line must be one of"),
    ([{"id": "a/b", "line": "keras", "pins": {"keras": "3.0.0"}}], "not a folder name"),
    ([{"id": "a", "line": "keras", "pins": {"keras": "3.0.0"}}] * 2, "appears twice"),
    ([{"id": "a", "line": "keras", "pins": {"keras": "3.0.0; rm"}}], "pins must map"),
    ([{"id": "a", "line": "keras", "pins": {"keras": "3.0.0"}, "engines": ["nope"]}], "engines must be"),
    ([], 'no "points" list'),
])
def test_a_bad_points_file_is_one_line_and_exit_2(tmp_path, points, says):
    path = write_points(tmp_path, points)
    with pytest.raises(matrix.MatrixError, match=says):
        matrix.load_points(path)
    done = subprocess.run([sys.executable, "-m", "compare", "matrix", "--points", path, "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT))
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_the_committed_points_are_valid_and_each_line_has_its_points():
    points = matrix.load_points(matrix.DEFAULT_POINTS)
    lines = {line: [p for p in points if p["line"] == line] for line in matrix.LINES}
    assert len(lines["keras"]) >= 5 and len(lines["tf_keras"]) >= 3
    assert len(matrix.load_points(os.path.join(os.path.dirname(matrix.DEFAULT_POINTS), "matrix_smoke.json"))) == 2


def fake_uv(tmp_path, install_status: int) -> list:
    """An installer that makes the environment's folder and then fails or succeeds installing;
    the environment's Python is one that cannot import anything."""
    script = tmp_path / "uv"
    script.write_text("#!/bin/sh\n"
                      'if [ "$1" = venv ]; then for last; do :; done; mkdir -p "$last/bin"; '
                      'printf "#!/bin/sh\\nexit 1\\n" > "$last/bin/python"; chmod +x "$last/bin/python"; exit 0; fi\n'
                      f'echo "error: no solution for the pins" >&2; exit {install_status}\n')
    script.chmod(0o755)
    return [str(script)]


def test_a_point_that_cannot_install_is_recorded_no_half_built_environment_is_left_and_the_matrix_goes_on(
        tmp_path, monkeypatch):
    monkeypatch.setenv("COMPARE_ENV_DIR", str(tmp_path / "envs"))
    monkeypatch.setattr(matrix, "installer", lambda: fake_uv(tmp_path, 1))
    points = matrix.load_points(write_points(tmp_path, [
        {"id": "first", "line": "torch", "pins": {"torch": "0.0.1"}},
        {"id": "second", "line": "torch", "pins": {"torch": "0.0.2"}}]))
    entries = matrix.run_matrix(points, str(tmp_path / "out"), "points.json")
    assert [e["status"] for e in entries] == ["install-failed", "install-failed"]
    assert "no solution for the pins" in entries[0]["reason"]
    assert os.listdir(tmp_path / "envs") == []  # neither the environment nor its build folder
    summary = json.loads((tmp_path / "out" / matrix.SUMMARY).read_text())
    assert [p["id"] for p in summary["points"]] == ["first", "second"]

    monkeypatch.setattr(matrix, "installer", lambda: fake_uv(tmp_path, 0))
    first, second = matrix.run_matrix(points[:1], str(tmp_path / "out"), "points.json", order=points)
    assert first["status"] == "import-failed" and first["reason"]
    assert second["status"] == "install-failed"  # not run this time: its earlier entry is kept
    assert os.listdir(tmp_path / "envs") == [matrix.env_digest(points[0]["pins"])]  # complete: renamed into place


def point_results(base: dict, engines, change=None) -> dict:
    out = copy.deepcopy(base)
    out["results"] = [r for r in out["results"] if r["engine"] in engines]
    out["parity"] = [r for r in out["parity"] if r["engine"] in engines]
    if change:
        change(out)
    return out


def synthetic_matrix(change) -> tuple:
    """The committed results as three keras points (torch and keras-torch), the third changed by
    ``change``; returns (the base results, the view)."""
    with open(BASELINE) as f:
        base = json.load(f)
    engines = ("torch", "keras-torch")
    results = {"k1": point_results(base, engines), "k2": point_results(base, engines),
               "k3": point_results(base, engines, change)}
    summary = {"points": [{"id": pid, "line": "keras", "version": v, "pins": {"keras": v}, "engines": list(engines),
                           "status": "ok"} for pid, v in (("k1", "3.0.0"), ("k2", "3.1.0"), ("k3", "3.2.0"))]
               + [{"id": "k4", "line": "keras", "version": "3.3.0", "pins": {"keras": "3.3.0"},
                   "engines": list(engines), "status": "install-failed", "reason": "no solution for the pins"}]}
    return base, matrix_view.build_view(summary, results, [])


def test_the_report_and_the_guide_render_the_matrix_and_every_guide_sentence_rests_on_it(tmp_path):
    from compare import report
    from compare.guide import guide_evidence
    from compare.tests.test_guide import resolve

    def move_a_tensor(results):
        record = next(r for r in results["results"] if r["engine"] == "keras-torch" and r["status"] == "ok"
                      and r["steps"] and r["steps"][0]["changed"]["D"]["params"])
        record["steps"][0]["changed"]["D"]["params"] = []

    base, view = synthetic_matrix(move_a_tensor)
    base["matrix"] = view
    texts = report.render_all(base, str(tmp_path / "guide.md"), str(tmp_path))
    assert "## Across versions" in texts["REPORT.md"] and len(texts["REPORT.md"].encode()) <= 60 * 1024
    assert re.search(r"Keras 3\.1\.0 -> 3\.2\.0: [1-9][0-9]* observation, 0 claim", texts["REPORT.md"])
    assert "Keras 3.0.0 -> 3.1.0" not in texts["REPORT.md"]  # nothing changed there
    assert "k4 (install-failed: no solution for the pins)" in texts[matrix_view.PAGE]
    assert "## Across versions" in texts["guide"] and "since Keras 3.2.0" in texts["guide"]
    cited = [(text, ev) for text, evidence in guide_evidence(base) for ev in evidence if ev["kind"] == "matrix"]
    assert cited and all(resolve(base, ev) for _, ev in cited)


def test_a_matrix_folder_that_cannot_be_read_is_a_usage_error_before_any_engine_starts(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / matrix.SUMMARY).write_text('{"schema": "compare.matrix/1", "points": [{"id": "a", '
                                                  '"results": "a/results.json"}]}')
    done = subprocess.run([sys.executable, "-m", "compare", "report", "--out", str(tmp_path / "o"), "--matrix",
                           str(tmp_path / "m")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT))
    assert done.returncode == 2 and "a/results.json: no such file" in done.stderr
    assert len(done.stderr.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_the_changed_in_view_names_the_versions_where_an_observation_a_verdict_or_a_number_moved():
    with open(BASELINE) as f:
        base = json.load(f)
    engines = ("torch", "keras-torch")
    target = next(r for r in base["results"] if r["engine"] == "keras-torch" and r["status"] == "ok" and r["claims"]
                  and r["claims"][0]["verdict"] == "holds")
    stage = next(r for r in base["parity"] if r["engine"] == "keras-torch" and r["config"] == "parity"
                 and r["stage"] == "iteration.10" and r["judged_diff"])

    def flip(results):
        record = next(r for r in results["results"] if (r["scenario"], r["engine"], r["init"], r["variant"]) ==
                      (target["scenario"], target["engine"], target["init"], target["variant"]))
        record["claims"][0]["verdict"] = "does-not-hold"
        for r in results["parity"]:
            if (r["engine"], r["dtype"], r["config"], r["stage"]) == (stage["engine"], stage["dtype"], "parity",
                                                                      "iteration.10"):
                r["judged_diff"] = r["judged_diff"] * 100

    results = {"k1": point_results(base, engines), "k2": point_results(base, engines),
               "k3": point_results(base, engines, flip)}
    summary = {"points": [{"id": pid, "line": "keras", "version": v, "pins": {"keras": v}, "engines": list(engines),
                           "status": "ok"} for pid, v in (("k1", "3.0.0"), ("k2", "3.1.0"), ("k3", "3.2.0"))]}
    links = [{"line": "keras", "from": "3.1.0", "to": "3.2.0", "engines": ["keras-torch"], "kind": "claim",
              "url": "https://example.org/pr", "title": "the PR"}]
    view = matrix_view.build_view(summary, results, links)
    first, second = view["pairs"]
    assert first["changes"] == [] and first["numeric"] == []
    claim, = second["changes"]
    assert (claim["kind"], claim["scenario"], claim["old"], claim["new"]) == (
        "claim", target["scenario"], "holds", "does-not-hold")
    assert claim["links"] == [{"url": "https://example.org/pr", "title": "the PR"}]
    numeric, = [m for m in second["numeric"] if m["dtype"] == stage["dtype"]]
    assert numeric["stage"] == "iteration.10" and numeric["links"] == []
    table = matrix_view.changed_in(view)
    assert {(i["subject"], i["pairs"][0]["new_version"]) for i in table} >= {(target["scenario"], "3.2.0")}
    page = matrix_view.render_page(view)
    assert "no release note, changelog entry, PR or issue found" in page and "[the PR](https://example.org/pr)" in page


def test_bench_of_a_folder_without_a_matrix_is_a_one_line_usage_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "compare", "bench", "--matrix", str(tmp_path)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT))
    assert done.returncode == 2 and "no matrix.json there" in done.stderr and len(done.stderr.splitlines()) == 1
