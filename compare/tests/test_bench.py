"""``compare bench``: it runs, writes well-formed JSON, predicts from the FLOP model (not from
timings) and fails cleanly on bad usage. Nothing here checks a timing against a target."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from compare import bench
from compare.engines import ENGINES
from compare.tests.locations import PACKAGE_PARENT

TORCH_IDIOMS = ["detach", "retain-graph", "recompute", "requires-grad-off"]


def run_bench(*args, env=None):
    env = dict(os.environ if env is None else env, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run([sys.executable, "-m", "compare.bench", *args], capture_output=True, text=True,
                          env=env, cwd=PACKAGE_PARENT, timeout=600)


def require_torch():
    if ENGINES["torch"].missing():
        pytest.skip("torch not installed: the torch idioms and the FLOP counts need it")


@pytest.fixture(scope="module")
def torch_toy(tmp_path_factory):
    """One tiny run: torch, toy size, 2 repeats, 1 warm-up iteration."""
    require_torch()
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = run_bench("--engines", "torch", "--sizes", "toy", "--repeats", "2", "--warmup", "1",
                     "--quiet", "--out", str(out))
    return done, out


@pytest.mark.slow  # the bench's own engine processes
def test_runs_and_writes_well_formed_json(torch_toy):
    done, out = torch_toy
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # --quiet
    assert "ms/iter" in done.stdout and "predicted" in done.stdout
    results = json.loads(out.read_text())
    assert results["schema"] == bench.SCHEMA
    assert results["settings"]["repeats"] == 2 and results["settings"]["sizes"] == ["toy"]
    rows = results["rows"]
    assert [r["idiom"] for r in rows] == TORCH_IDIOMS
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp file left behind
    for r in rows:
        assert r["status"] == "ok" and r["engine"] == "torch" and r["baseline"] == "detach"
        assert len(r["samples_ms"]) == 2 and len(r["ratios"]) == 2
        assert all(math.isfinite(x) and x > 0 for x in r["samples_ms"] + [r["ms_median"], r["ratio_median"]])
        assert r["peak_bytes"] is not None and r["memory_method"] in ("rss-hwm", "ru_maxrss")
        assert isinstance(r["within_tolerance"], bool)
    assert rows[0]["ratios"] == [1.0, 1.0] and rows[0]["predicted_ratio"] == 1.0


def test_ratios_are_taken_pair_by_pair():
    timing = {"baseline": "a", "idioms": {
        "a": {"samples_s": [1.0, 2.0, 4.0], "iterations_per_sample": 1, "flops_formula": {"FG": 1},
              "memory_formula": {"PG": 1}, "facts": {}},
        "b": {"samples_s": [3.0, 6.0, 12.0], "iterations_per_sample": 1, "flops_formula": {"FG": 2},
              "memory_formula": [{"PG": 1}, {"PG": 3}], "facts": {}},
    }}
    rows = bench.build_rows("torch", "toy", timing, {}, {"FG": 5, "PG": 7})
    # noise common to a repeat cancels: every pair gives 3, whatever the spread of the samples
    assert rows[1]["ratios"] == [3.0, 3.0, 3.0] and rows[1]["ratio_iqr"] == 0
    assert rows[1]["predicted_ratio"] == 2.0 and rows[1]["within_tolerance"] is False
    assert rows[1]["predicted_memory_ratio"] == 3.0  # the larger phase is the peak
    assert rows[1]["memory_formula"] == "max(PG, 3 PG)"


@pytest.mark.slow  # the bench's own engine processes
def test_predictions_come_from_the_flop_model(torch_toy):
    done, out = torch_toy
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    blocks = results["model"]["blocks"]["toy"]
    rows = {r["idiom"]: r for r in results["rows"]}
    base = rows["detach"]["flops_model"]
    # retain_graph's extra: one backward through G, and through D's first layer into G
    assert rows["retain-graph"]["flops_model"] - base == blocks["BG"] + blocks["BDwx"] - blocks["BDw"]
    assert rows["recompute"]["flops_model"] - base == blocks["FG"]  # one extra forward of G
    assert base - rows["requires-grad-off"]["flops_model"] == blocks["BDwx"] - blocks["BDx"]  # no D weight grads
    for idiom, row in rows.items():
        assert row["predicted_ratio"] == pytest.approx(row["flops_model"] / base)
        # each formula describes its code: the whole iteration counted directly gives the same
        assert results["model"]["direct_flops"]["toy"][idiom] == row["flops_model"]


def test_backward_block_is_what_flop_counter_counts():
    """The model's BG is G's backward counted independently here, in the test process."""
    require_torch()
    from torch.utils.flop_counter import FlopCounterMode

    from compare.engines.torch.bench import Gan, count_blocks

    gan = Gan("toy", "cpu")
    out = gan.G(gan.z).sum()
    with FlopCounterMode(display=False) as counter:
        out.backward()
    blocks = count_blocks("toy", "cpu")["blocks"]
    assert blocks["BG"] == counter.get_total_flops() > 0
    assert blocks["BDwx"] > blocks["BDw"] and blocks["BDwx"] > blocks["BDx"]


def test_unknown_engine_is_a_one_line_usage_error():
    done = run_bench("--engines", "torch,pytorch-lightning")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "unknown engine pytorch-lightning" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("compare bench: error:")


def test_unknown_size_is_a_one_line_usage_error():
    done = run_bench("--sizes", "toy,huge")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "unknown size huge" in done.stderr


def test_out_that_is_a_folder_is_a_one_line_usage_error(tmp_path):
    done = run_bench("--out", str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "is a folder" in done.stderr


def test_cuda_without_gpu_is_a_one_line_usage_error():
    done = run_bench("--device", "cuda", "--engines", "torch", env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no GPU" in done.stderr and "Traceback" not in done.stderr


def test_main_returns_the_status(capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert bench.main(["--device", "cuda"]) == 2
    assert bench.main(["--repeats", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def test_importing_bench_imports_no_framework():
    code = ("import sys, compare.bench; "
            "print([m for m in ('torch', 'tensorflow', 'keras', 'jax', 'tf_keras') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE_PARENT, check=True)
    assert out.stdout.strip() == "[]"


def test_every_engine_has_a_bench_module():
    for engine in ENGINES:
        path = os.path.join(PACKAGE_PARENT, *bench.bench_module(engine).split(".")) + ".py"
        assert os.path.exists(path), path


def test_report_time_is_accounted_for_from_the_reports_own_results(engine_runs, parity_records, tmp_path):
    """The account `--report-floor` gives of the report's time: every process split into
    import, parity and scenarios (the rest is start-up and writing, never negative), and the
    scenario seconds summed per engine and family from the records themselves."""
    from compare import report
    from compare.observations import collect
    from compare.tests.plugin import DTYPES

    ran = [e for e in ENGINES if engine_runs[(e, "float32")].status == "ok"]
    if not ran:
        pytest.skip("no engine ran")
    results = report.build_results(list(ENGINES), list(DTYPES), engine_runs, parity_records,
                                   collect(list(ENGINES), engine_runs))
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    account = bench.account_for(str(path))
    for process in account["processes"]:
        run = engine_runs[(process["engine"], process["dtype"])]
        if run.status != "ok":
            continue
        assert process["import"] > 0 and process["parity"] > 0
        assert (process["scenarios"] > 0) == (process["dtype"] == "float32")
        assert process["import"] + process["parity"] + process["scenarios"] <= process["seconds"] + 0.01
    totals = account["engine_seconds"]
    assert totals["other"] >= -0.01 * len(account["processes"])
    for engine in ran:
        families = account["scenario_families"][engine]
        assert set(families) == {"scope", "freeze", "detach"}
        expected = sum(r.get("seconds") or 0 for r in results["results"] if r["engine"] == engine)
        assert math.isclose(sum(families.values()), expected, rel_tol=1e-9, abs_tol=1e-9)
    costs = [c["seconds"] for c in account["costliest_scenarios"]]
    assert costs == sorted(costs, reverse=True) and len(costs) == min(bench.COSTLIEST, len(
        {(r["scenario"], r["engine"]) for r in results["results"]}))
    floor = {"floor_s": 10.0, "floor_engine_s": 18.0, "jobs": 2, "account": account}
    lines = report.floor_account(floor)
    assert f"{totals['seconds']:.1f}" in lines[0] and "30.0 engine-seconds, 12.0 more" in lines[0]
    table = [line for line in "\n".join(lines).splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(account["scenario_families"])  # the header, then a row per engine


def test_no_account_without_the_reports_results(tmp_path):
    from compare import report

    assert bench.account_for(str(tmp_path / "missing.json")) is None
    assert report.floor_account({"floor_s": 1.0, "report_s": 2.0}) == []  # a bench.json from before accounts


def test_rows_without_predictions_render_as_measured_only():
    """Without torch the bench counts no FLOPs: its rows carry no prediction, and the report
    shows the measurements with 'no prediction' instead of failing or marking a miss."""
    from compare import report

    timing = {"baseline": "custom-step", "idioms": {
        idiom: {"samples_s": samples, "iterations_per_sample": 1, "flops_formula": {"FG": 1},
                "memory_formula": {"PG": 1}, "facts": {}}
        for idiom, samples in (("custom-step", [1.0, 2.0]), ("combined-frozen", [1.5, 2.5]))}}
    memory = {"custom-step": {"peak_bytes": 100}, "combined-frozen": {"peak_bytes": 150}}
    rows = bench.build_rows("keras-torch", "toy", timing, memory, None)
    assert all(r["predicted_ratio"] is None and r["within_tolerance"] is None for r in rows)
    assert rows[1]["ratios"] == [1.5, 1.25] and rows[1]["memory_ratio"] == 1.5
    text = "\n".join(report.performance_section({"source": "bench.json", "rows": rows}))
    assert "1.38 (0.12) / no prediction" in text and "1.50 / no prediction" in text
    assert " *" not in text and "Where the model misses" not in text


def test_the_edited_copy_changes_one_scenarios_code_and_nothing_else(tmp_path):
    """--report-floor's edit: in a copy of the package, every implementation of the scenario
    gets one line more, so its parts' keys change in every engine and no other key does."""
    from compare.scenarios import catalog
    from compare.tests.test_cache import changed, keys, package_copy

    before = keys(package_copy(tmp_path))
    bench.edit_scenario(str(tmp_path / "edited"), "detach.recompute_fake")
    engines = catalog()["detach.recompute_fake"].implementations
    assert len(set(map(id, engines.values()))) > 1  # several functions, some in one file
    assert changed(before, keys(tmp_path / "edited")) == {f"{e} float32 scenario:detach.recompute_fake"
                                                          for e in engines}


def test_report_figures_stand_beside_the_floor_the_ratio_and_the_aim():
    from compare import report

    floor = {"engines": ["torch", "keras-jax"], "processes": 4, "floor_s": 10.0, "report_s": 40.0, "ratio": 4.0,
             "edited_scenario": "scope.g_step", "runs": [
                 {"name": "cold", "what": "an empty result cache", "seconds": 40.0, "ratio": 4.0, "aim": 5.0,
                  "exit_status": 0},
                 {"name": "warm", "what": "again, nothing changed", "seconds": 20.0, "ratio": 2.0, "aim": 1.5,
                  "exit_status": 0},
                 {"name": "edited", "what": "after an edit to one scenario", "seconds": 24.0, "ratio": 2.4,
                  "aim": 2.5, "exit_status": 0}]}
    suite = {"suite": {"command": "python -m pytest --pyargs compare", "seconds": 160.0, "aim_s": 150.0,
                       "exit_status": 0, "summary": "400 passed"}}
    lines = report.report_figures(floor, suite)
    rows = [line for line in "\n".join(lines).splitlines() if line.startswith("| ") and "---" not in line]
    assert [cell.strip() for cell in rows[1].split("|")[1:7]] == ["an empty result cache", "40.0", "10.0", "4.00",
                                                                  "5", "0"]
    assert "2.00" in rows[2] and "1.5 (missed)" in rows[2]
    assert "after an edit to one scenario (scope.g_step)" in rows[3] and "2.5 " in rows[3] and "missed" not in rows[3]
    assert "160.0" in rows[5] and "150 (missed)" in rows[5] and "400 passed" in rows[5]
    data = {"schema": bench.SCHEMA, "rows": [], "report_floor": floor, "suite": suite}
    report.check_bench(data)
    data["report_floor"]["runs"][1]["seconds"] = "slow"
    with pytest.raises(ValueError, match=r"report_floor.runs\[1\].seconds"):
        report.check_bench(data)


@pytest.mark.parametrize("args,message", [(["--report-only"], "--report-only needs --report-floor, --check-floor or --suite"),
                                          (["--report-floor", "--edit-scenario", "scope.nope"],
                                           "unknown scenario scope.nope")])
def test_report_options_are_checked_before_anything_runs(args, message):
    done = run_bench(*args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
