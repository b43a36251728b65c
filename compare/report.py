"""Turn engine runs and parity records into ``results.json`` and ``REPORT.md``.

Every sentence with a number or a verdict in the report is filled from the run; the
fixed prose only says what a table means. The four output files are replaced as one set:
a reader sees the old set or the new one, never a mix or half of a file.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import importlib.metadata
import json
import math
import os
import platform
import secrets
import shutil
import signal
import re
import tempfile
import textwrap
import threading
from typing import Tuple, Dict, List, Optional

from tabulate import tabulate

import compare
from compare.engines import ENGINES, REFERENCE
from compare.models.toy import PARITY, PITFALLS
from compare.parity import RULES, TOLERANCE, pitfall_effects, summarise
from compare.program import STAGES

SCHEMA = "compare.results/2"  # 2: a "rounding" kind in changed lists and gradient slots
PACKAGES = ("torch", "tensorflow", "tensorflow-cpu", "keras", "tf_keras", "jax", "jaxlib", "numpy")


def environment() -> dict:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    from compare.runner import cpu_model, removed_variables

    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "packages": packages, "compare": compare.__version__,
        # the caller's variables the runner removed before starting the engines
        "removed_variables": removed_variables(),
    }


def clean(value):
    """JSON has no inf or NaN: write them as strings so that they survive a round trip."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, set):
        return sorted(clean(v) for v in value)
    return value


def load_bench(path: str) -> dict:
    """The parts of a `compare bench` results file that the report shows, checked to have
    the types the report reads, so that a bad file is refused before any engine runs."""
    from compare.diff import ResultsError

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ResultsError(f"cannot read the bench results {path}: {exc}")
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("compare.bench/"):
        raise ResultsError(f"{path} is not a `compare bench` results file")
    try:
        check_bench(data)
    except ValueError as exc:
        raise ResultsError(f"{path} is not a usable `compare bench` results file: {exc}")
    keep = ("engine", "size", "idiom", "baseline", "status", "reason", "ms_median", "ms_iqr", "ratio_median",
            "ratio_iqr", "predicted_ratio", "within_tolerance", "flops_formula", "peak_bytes", "memory_ratio",
            "predicted_memory_ratio", "memory_within_tolerance", "memory_formula", "facts")
    return {"source": os.path.basename(path), "schema": data["schema"], "settings": data.get("settings"),
            "environment": data.get("environment"), "sizes": data.get("sizes"),
            "memory_note": data.get("memory_note"), "report_floor": data.get("report_floor"), "suite": data.get("suite"),
            "rows": [{k: r.get(k) for k in keep if k in r} for r in data.get("rows", [])]}


KINDS = {"a number": (int, float), "a string": str, "an object": dict, "a list": list}


def need(value, kind: str, where: str, optional: bool = False):
    """``value`` if it is of ``kind`` (a key of KINDS; None too where optional), else ValueError."""
    if (value is None and optional) or (isinstance(value, KINDS[kind]) and not isinstance(value, bool)):
        return value
    raise ValueError(f"{where} is {json.dumps(value)[:40]}, not {kind}" + (" or null" if optional else ""))


def check_bench(data: dict) -> None:
    """Raise ValueError naming the first field that performance_section or floor_account
    would fail on (they read these fields with these types)."""
    settings = need(data.get("settings"), "an object", "settings", optional=True) or {}
    if "tolerance" in settings:
        need(settings["tolerance"], "a number", "settings.tolerance")
    need(data.get("memory_note"), "a string", "memory_note", optional=True)
    for i, row in enumerate(need(data.get("rows", []), "a list", "rows")):
        where = f"rows[{i}]"
        need(row, "an object", where)
        if row.get("status") != "ok":
            continue
        for key in ("engine", "size", "idiom", "baseline"):
            need(row.get(key), "a string", f"{where}.{key}")
        for key in ("ms_median", "ratio_median", "ratio_iqr"):
            need(row.get(key), "a number", f"{where}.{key}")
        for key in ("predicted_ratio", "memory_ratio", "predicted_memory_ratio", "peak_bytes"):
            need(row.get(key), "a number", f"{where}.{key}", optional=True)
        need(row.get("facts"), "an object", f"{where}.facts", optional=True)
    for name, times in (need(data.get("suite"), "an object", "suite", optional=True) or {}).items():
        need(times, "an object", f"suite.{name}")
        for key in ("command", "summary"):
            need(times.get(key), "a string", f"suite.{name}.{key}")
        for key in ("seconds", "aim_s"):
            need(times.get(key), "a number", f"suite.{name}.{key}")
    floor = need(data.get("report_floor"), "an object", "report_floor", optional=True)
    if not floor:
        return
    for key in ("report_s", "floor_s", "ratio", "processes"):
        need(floor.get(key), "a number", f"report_floor.{key}")
    for i, run in enumerate(need(floor.get("runs"), "a list", "report_floor.runs", optional=True) or []):
        need(run, "an object", f"report_floor.runs[{i}]")
        for key in ("name", "what"):
            need(run.get(key), "a string", f"report_floor.runs[{i}].{key}")
        for key in ("seconds", "ratio", "aim"):
            need(run.get(key), "a number", f"report_floor.runs[{i}].{key}")
    if floor.get("runs"):
        need(floor.get("edited_scenario"), "a string", "report_floor.edited_scenario")
    account = need(floor.get("account"), "an object", "report_floor.account", optional=True)
    if not account or "floor_engine_s" not in floor:
        return
    need(floor["floor_engine_s"], "a number", "report_floor.floor_engine_s")
    need(floor.get("jobs"), "a number", "report_floor.jobs", optional=True)
    where = "report_floor.account"
    total = need(account.get("engine_seconds"), "an object", f"{where}.engine_seconds")
    for key in ("seconds", "import", "parity", "scenarios", "other"):
        need(total.get(key), "a number", f"{where}.engine_seconds.{key}")
    for engine, per in need(account.get("scenario_families"), "an object", f"{where}.scenario_families").items():
        for family, seconds in need(per, "an object", f"{where}.scenario_families.{engine}").items():
            need(seconds, "a number", f"{where}.scenario_families.{engine}.{family}")
    for i, process in enumerate(need(account.get("processes"), "a list", f"{where}.processes")):
        need(process, "an object", f"{where}.processes[{i}]")
        need(process.get("engine"), "a string", f"{where}.processes[{i}].engine")
        for key in ("import", "parity"):
            need(process.get(key), "a number", f"{where}.processes[{i}].{key}")
    for i, costly in enumerate(need(account.get("costliest_scenarios"), "a list", f"{where}.costliest_scenarios")):
        need(costly, "an object", f"{where}.costliest_scenarios[{i}]")
        for key in ("scenario", "engine"):
            need(costly.get(key), "a string", f"{where}.costliest_scenarios[{i}].{key}")
        need(costly.get("seconds"), "a number", f"{where}.costliest_scenarios[{i}].seconds")


def build_results(engines: List[str], dtypes: List[str], runs: Dict, records: List[dict],
                  observations: List[dict], performance: Optional[dict] = None) -> dict:
    engine_info = {}
    for engine in engines:
        spec = ENGINES[engine]
        per_dtype = {}
        for dtype in dtypes:
            run = runs[(engine, dtype)]
            entry = {"status": run.status, "seconds": round(run.seconds, 2)}
            if run.reused:
                entry["reused"] = run.reused  # from the result cache: when that run was made
            if run.reason:
                entry["reason"] = run.reason
            if run.status in ("failed", "timeout"):
                entry["stderr_tail"] = run.stderr_tail
            if run.facts:
                for key in ("versions", "threads", "execution", "compilation_cache", "computed_dtypes", "bn_estimator",
                            "precision_probes"):
                    entry[key] = run.facts.get(key)
                entry["phase_seconds"] = {k: round(v, 2) for k, v in run.facts.get("phase_seconds", {}).items()}
                entry["losses"] = run.facts["configs"][PARITY.name]["losses"]
            per_dtype[dtype] = entry
        available = spec.available()
        engine_info[engine] = {
            "description": spec.description, "available": available,
            "versions": spec.versions(), "install": spec.install, "runs": per_dtype,
        }
        if not available:
            engine_info[engine]["reason"] = f"{', '.join(spec.missing())} not installed"
    applied = sorted({rule.strip() for r in records if r["rule"] for rule in r["rule"].split(",")})
    return clean({
        "schema": SCHEMA,
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "dtypes": dtypes,
        "reference": REFERENCE,
        "engines": engine_info,
        "results": observations,
        "configs": {PARITY.name: PARITY.to_json()} | {name: c.to_json() for name, (c, _) in PITFALLS.items()},
        "tolerances": TOLERANCE,
        "rules": {rule: RULES[rule] for rule in applied},
        "parity": records,
        "pitfalls": pitfall_effects(records),
        "performance": performance,
    })


def fmt(x) -> str:
    if isinstance(x, str):
        return x
    if x is None:
        return ""
    return "0" if x == 0 else f"{x:.1e}"


def execution_phrase(execution: Dict[str, Dict[str, str]]) -> str:
    """How the parity stages ran, per stage: one mode, or each mode with the configs it served
    ('gradients: eager; iterations: jax.jit (parity), eager (bn-defaults, ...)')."""
    stages: Dict[str, Dict[str, List[str]]] = {}
    for config, parts in execution.items():
        for stage, mode in parts.items():
            stages.setdefault(stage, {}).setdefault(mode, []).append(config)
    return "; ".join(f"{stage}: " + ", ".join(mode if len(modes) == 1 else f"{mode} ({', '.join(configs)})"
                                              for mode, configs in modes.items())
                     for stage, modes in stages.items())


def engine_section(results: dict) -> str:
    rows = []
    for engine, info in results["engines"].items():
        for dtype, run in info["runs"].items():
            if run["status"] == "ok":
                versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
                note = ""
            else:
                versions = ""
                note = run.get("reason", "")
                if run["status"] == "unavailable":
                    note += f" ({info['install']})"
            threads = ", ".join(f"{k} {v}" for k, v in (run.get("threads") or {}).items())
            mode = execution_phrase(run.get("execution") or {})
            if run.get("reused"):
                note = (note + " " if note else "") + reuse_note(run["reused"])
            rows.append([engine, info["description"], dtype, run["status"], versions, threads, mode, note])
    # timings stay in results.json and the performance section: they are not facts about the versions
    return tabulate(rows, ["engine", "framework", "dtype", "status", "versions", "threads", "parity ran", "note"],
                    tablefmt="github")


def reuse_note(reused: dict) -> str:
    """Which parts of an engine run came from the result cache, when they ran, and what ran again."""
    parts = reused.get("parts") or {"parity": reused["ran_at"]}
    times = sorted(set(parts.values()))
    when = f"of {times[0]}" if len(times) == 1 else f"made from {times[0]} to {times[-1]}"
    ran = reused.get("ran") or []
    if not ran:
        return f"reused the stored run {when}"

    def what(names: List[str]) -> str:
        scenarios = [n.split(":", 1)[1] for n in names if n != "parity"]
        listed = ", ".join(scenarios) if len(scenarios) <= 3 else f"{len(scenarios)} scenarios"
        return " and ".join((["the parity stages"] if "parity" in names else []) + ([listed] if scenarios else []))

    return f"reused {what(list(parts))} (stored runs {when}); ran {what(ran)}"


def parity_section(results: dict) -> List[str]:
    out = []
    rows = summarise(results["parity"])
    for dtype in results["dtypes"]:
        engines = [e for e in results["engines"] if any(r["engine"] == e and r["dtype"] == dtype for r in rows)]
        if not engines:
            out.append(f"No engine could be compared with {REFERENCE} in {dtype}.\n")
            continue
        table = []
        for stage in STAGES:
            line = [stage]
            for engine in engines:
                row = next((r for r in rows if (r["engine"], r["dtype"], r["stage"]) == (engine, dtype, stage)), None)
                if row is None:
                    line.append("")
                    continue
                mark = "ok" if row["holds"] else "FAILS"
                cell = f"{fmt(row['judged_diff'])} {mark}"
                if row["max_abs_diff"] != row["judged_diff"]:
                    cell += f" (raw {fmt(row['max_abs_diff'])})"
                line.append(cell)
            table.append(line)
        tolerances = ", ".join(
            f"{e} {fmt(next(r['tolerance'] for r in rows if r['engine'] == e and r['dtype'] == dtype and r['stage'] != 'structure'))}"
            for e in engines)
        out.append(f"### {dtype}\n\nLargest absolute difference from {REFERENCE} over every tensor of the stage, "
                   f"after the named rules (the raw difference in brackets where a rule explains part of it). "
                   f"Tolerances: {tolerances}.\n")
        out.append(tabulate(table, ["stage"] + engines, tablefmt="github") + "\n")
    return out


def rounding_notes(results: dict) -> List[str]:
    """What the recorder's "rounding" kind means, with the bound and this run's margin to it."""
    from compare.observe import ROUNDING_BOUND

    names = sorted({n for r in results["results"] for net in (r.get("tensors") or {}).values()
                    for n in net.get("rounding", [])})
    if not names:
        return []
    ratios = [r["largest_rounding_ratio"] for r in results["results"] if r.get("largest_rounding_ratio")]
    measured = (f"the largest ratio in this run is below {fmt(10.0 ** math.ceil(math.log10(max(ratios))))}"
                if ratios else "no engine of this run keeps gradients on tensors")
    return [
        f"Rounding noise. {', '.join(names)} feed a BatchNorm directly: while that BN runs in training mode it "
        "subtracts the batch mean, so the bias cannot change the output and its gradient is zero in exact "
        "arithmetic. What a machine computes is rounding noise, exactly 0.0 or not depending on the order of "
        "summation (the CPU, the thread count). The recorder gives these biases a kind of their own, so that an "
        "observation reads the same on every machine: a gradient slot reads `rounding` where the bias's "
        f"gradient is at most {fmt(ROUNDING_BOUND)} (2^-16) times the largest gradient of its network ({measured}; "
        "above the bound it reads `nonzero`), and a step that moved the layer's kernel lists the bias under "
        "`rounding` whether or not it moved itself (Adam turns nonzero noise into a step of about lr and leaves "
        "an exact 0.0 in place). A bias that moves while its kernel does not is listed as moved, and every "
        "other tensor is compared bit for bit.",
        "",
    ]


def init_notes(results: dict) -> List[str]:
    """Where a scenario's two initialisations gave different observations in this run: the
    evidence beside the catalog's reason for running both."""
    from compare.observations import differences, key
    from compare.scenarios import INITS, INITS_DECISION

    records = {key(r): r for r in results["results"]}
    observed = ("ok", "raised")
    pairs, differ = 0, {}
    for r in results["results"]:
        other = records.get((r["scenario"], r["engine"], INITS[1], r["variant"]))
        if r["init"] != INITS[0] or r["status"] not in observed or not other or other["status"] not in observed:
            continue
        pairs += 1
        if differences(r, other):
            differ.setdefault((r["scenario"], r["variant"]), []).append(r["engine"])
    if not pairs:
        return []
    where = "; ".join(f"{scenario}{f' ({variant})' if variant else ''} on {', '.join(engines)}"
                      for (scenario, variant), engines in differ.items())
    return [
        f"Initialisations. {INITS_DECISION} In this run the two gave different observations in "
        f"{sum(map(len, differ.values()))} of the {pairs} (scenario, variant, engine) runs observed from both"
        + (f": {where}." if differ else "."),
        "",
    ]


def tolerance_notes(results: dict) -> List[str]:
    """Why the tolerances are what they are, with this run's numbers on both sides of them."""
    out = []
    parity_records = [r for r in results["parity"] if r["config"] == PARITY.name and r["stage"] != "structure"]
    f32 = [r["judged_diff"] for r in parity_records if r["tolerance"] == TOLERANCE["float32"]
           and isinstance(r["judged_diff"], float)]
    effects = [p["max_abs_diff"] for p in results["pitfalls"] if not p["holds"] and isinstance(p["max_abs_diff"], float)]
    if f32:
        out.append(
            f"Tolerances. float64: {fmt(TOLERANCE['float64'])}, the bar set for engines that compute in float64. "
            f"float32 (and engines that compute in float32 whatever was asked): {fmt(TOLERANCE['float32'])}. A float32 "
            "value carries a rounding error of 2^-24 (6e-8) relative per operation, and one output of these nets "
            "sums up to 576 products, so rounding alone can reach about 3e-5 relative in the worst case; "
            f"the largest float32-level difference measured in this run is {fmt(max(f32))}"
            + (f", and the smallest effect of a restored default that exceeds it is {fmt(min(e for e in effects if e > TOLERANCE['float32']))}"
               if any(e > TOLERANCE["float32"] for e in effects) else "")
            + ". The tolerance separates the two.")
        out.append("")
    reference_only = sorted({n for r in parity_records for n in r.get("reference_only", [])})
    if reference_only:
        out += [f"PyTorch-only state, with no counterpart in Keras and so not compared: {', '.join(reference_only)}.", ""]
    return out


def rules_section(results: dict) -> List[str]:
    out = []
    for rule, text in results["rules"].items():
        engines = sorted({f"{r['engine']} ({r['dtype']})" for r in results["parity"]
                          if r["config"] == PARITY.name and r["rule"] and rule in r["rule"]})
        residuals = [r["residual_after_rule"] for r in results["parity"]
                     if r["config"] == PARITY.name and r["rule"] and rule in r["rule"]
                     and isinstance(r.get("residual_after_rule"), float)]
        line = f"- **{rule}**: {text} Applies to: {', '.join(engines)}."
        if rule == "bn-variance-estimator" and residuals:
            line += f" Largest residual after the rule: {fmt(max(residuals))}."
        out.append(line)
    return out


def facts_section(results: dict) -> str:
    rows = []
    for engine, info in results["engines"].items():
        for dtype, run in info["runs"].items():
            if run["status"] != "ok":
                continue
            bn = run["bn_estimator"]
            probes = "; ".join(f"{k} = {fmt(v) if isinstance(v, float) else v}"
                               for k, v in (run["precision_probes"] or {}).items())
            rows.append([engine, dtype, bn["estimator"], fmt(min(bn["error_vs_biased"], bn["error_vs_unbiased"])),
                         "yes" if bn["on_float32_grid"] else "no", run["computed_dtypes"]["G output"], probes])
    return tabulate(rows, ["engine", "dtype", "BN keeps variance", "error vs numpy", "on float32 grid",
                           "G output dtype", "op-level probes"], tablefmt="github")


def pitfalls_section(results: dict) -> str:
    rows = []
    for name, (config, description) in PITFALLS.items():
        line = [f'<a id="pitfall-{name}"></a>{name}', description]
        for dtype in results["dtypes"]:
            cells = []
            for p in results["pitfalls"]:
                if p["pitfall"] == name and p["dtype"] == dtype:
                    cells.append(f"{p['engine']} {fmt(p['max_abs_diff'])}" + ("" if p["holds"] else "*"))
            line.append("; ".join(cells))
        rows.append(line)
    headers = ["pitfall", "what changes"] + [f"effect, {d}" for d in results["dtypes"]]
    return tabulate(rows, headers, tablefmt="github")


def moved_cell(record: dict) -> str:
    """What one observation did, in a few characters: which networks' parameters moved,
    and whose state alone moved (in brackets)."""
    status = record["status"]
    if status == "not-applicable":
        return "n/a"
    if status in ("unavailable", "failed"):
        return status
    return moved_text(record["changed"], record.get("error") if status == "raised" else None)


def moved_text(changed: dict, error: Optional[dict] = None) -> str:
    """'G+D', 'G (D state)', 'none', with ', raised TYPE' where the call raised."""
    params = [net for net in ("G", "D") if changed[net]["params"]]
    state = [net for net in ("G", "D") if changed[net]["state"] and not changed[net]["params"]]
    text = "+".join(params) if params else "none"
    if state:
        text += f" ({'+'.join(state)} state)"
    if error:
        text += f", raised {error['type']}"
    return text


def step_cell(step: dict) -> str:
    return moved_text(step["changed"], step.get("error"))


def changed_names(changed: dict, tensors: Optional[dict]) -> str:
    """'G params: all; D state: bn.moving_mean' - names listed only where some of a kind did not move.
    Biases stepped with a rounding-noise gradient read 'D rounding: conv1.bias'."""
    parts = []
    for net in ("G", "D"):
        for kind in ("params", "state", "rounding"):
            names = changed[net].get(kind, [])
            if not names:
                continue
            if tensors and kind != "rounding" and sorted(names) == sorted(tensors[net].get(kind, [])):
                parts.append(f"{net} {kind}: all")
            else:
                parts.append(f"{net} {kind}: {', '.join(n.split('.', 1)[1] for n in names)}")
    return "; ".join(parts)


def summarise_value(value) -> str:
    if isinstance(value, list):
        distinct = sorted({round(v, 4) for v in value if isinstance(v, (int, float))})
        return ", ".join(f"{v:.4f}" for v in distinct[:4]) + (" ..." if len(distinct) > 4 else "")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def find_record(results: dict, scenario: str, engine: str, init: str, variant: str):
    return next((r for r in results["results"] if r["scenario"] == scenario and r["engine"] == engine
                 and r["init"] == init and r["variant"] == variant), None)


def claim_verdicts(results: dict, scenario, engine: str, claim_id: str) -> str:
    """One verdict, or the majority verdict with its exceptions named (by variant, and by
    initialisation only where the two initialisations disagree)."""
    seen: Dict[str, Dict[str, str]] = {}
    for record in results["results"]:
        if record["scenario"] == scenario.id and record["engine"] == engine:
            for verdict in record.get("claims", []):
                if verdict["claim"] == claim_id and verdict["verdict"] != "not-applicable":
                    seen.setdefault(record["variant"], {})[record["init"]] = verdict["verdict"]
    labelled: Dict[str, str] = {}
    for variant, by_init in seen.items():
        if len(set(by_init.values())) == 1:
            labelled[variant or "all"] = next(iter(by_init.values()))
        else:
            labelled.update({" ".join(filter(None, [variant, f"{init} init"])): v for init, v in by_init.items()})
    if not labelled:
        return "n/a"
    verdicts = list(labelled.values())
    majority = max(verdicts, key=verdicts.count)  # ties go to the first seen: the same text every run
    others = [f"{k}: {v}" for k, v in labelled.items() if v != majority]
    return majority if not others else f"{majority}, except {'; '.join(others)}"


RAN = ("ok", "raised")  # statuses of a record whose steps were observed
MAIN = "REPORT.md"  # the main page, as Links names it


def anchor(*parts: str) -> str:
    """An id valid in HTML and Markdown: the parts joined by '-', other characters as '_'."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts if p)


def step_anchor(record: dict, index: int) -> str:
    return anchor(record["scenario"], record["engine"], record["init"], record["variant"], f"step{index + 1}")


def claim_anchor(scenario_id: str, claim_id: str) -> str:
    return anchor("claim", scenario_id, claim_id)


def detail_anchor(scenario_id: str) -> str:
    return anchor("detail", scenario_id)


def page_name(scenario_id: str) -> str:
    """A scenario's page, relative to the report's folder."""
    return f"scenarios/{scenario_id}.md"


class Links:
    """Link targets: in Markdown, REPORT.md and one page per scenario (``here`` is the page
    being written); in HTML, anchors of the one page."""

    def __init__(self, html: bool = False, here: str = MAIN):
        self.html, self.here = html, here

    def to(self, page: str, target: str) -> str:
        if self.html or page == self.here:
            return "#" + target
        if page == MAIN:
            return "../REPORT.md#" + target
        return (page_name(page) if self.here == MAIN else f"{page}.md") + "#" + target

    def scenario(self, scenario_id: str) -> str:
        return self.to(scenario_id, detail_anchor(scenario_id))

    def step(self, record: dict, index: int) -> str:
        return self.to(record["scenario"], step_anchor(record, index))

    def main(self, target: str) -> str:
        return self.to(MAIN, target)


def ran(record: Optional[dict]) -> bool:
    return record is not None and record["status"] in RAN


def step_rows(results: dict, scenario, variant: str, engines: List[str], init: str) -> List[tuple]:
    """(label, step index or None, {engine: cell}) for one initialisation: a row per step where
    every engine that ran made as many calls, else one row for the whole scenario."""
    records = {e: find_record(results, scenario.id, e, init, variant) for e in engines}
    observed = {e: r for e, r in records.items() if ran(r)}
    counts = {len(r["steps"]) for r in observed.values()}
    if len(counts) != 1 or counts == {0}:
        return [("overall", None, {e: moved_cell(r) if r else "missing" for e, r in records.items()})]
    return [(f"step {i + 1}", i, {e: step_cell(r["steps"][i]) if e in observed else
                                  (moved_cell(r) if r else "missing") for e, r in records.items()})
            for i in range(counts.pop())]


def differing_steps(results: dict, scenario, variant: str, engines: List[str]) -> List[tuple]:
    """The step rows (first initialisation) where the engines that ran do not all agree."""
    init = scenario.inits[0]
    observed = [e for e in engines if ran(find_record(results, scenario.id, e, init, variant))]
    return [row for row in step_rows(results, scenario, variant, engines, init)
            if len({row[2][e] for e in observed}) > 1]


def majority(values: List[str]) -> str:
    return max(values, key=values.count)  # ties go to the first: the same every run


def scenario_matrix(results: dict, engines: List[str], links: Links) -> str:
    """Each scenario's outcome per engine; where engines with the same outcome differ at a
    step, the first such step is named in every cell."""
    from compare.scenarios import catalog

    rows = []
    for scenario in catalog().values():
        for variant in scenario.variants:
            cells = {}
            for engine in engines:
                per_init = [find_record(results, scenario.id, engine, init, variant) for init in scenario.inits]
                texts = [moved_cell(r) if r else "missing" for r in per_init]
                cells[engine] = texts[0] if len(set(texts)) == 1 else "; ".join(
                    f"{init}: {c}" for init, c in zip(scenario.inits, texts))
            for label, index, step in differing_steps(results, scenario, variant, engines):
                hidden = any(cells[a] == cells[b] and step[a] != step[b] for a in engines for b in engines)
                if index is not None and hidden:
                    first = scenario.inits[0]
                    for engine in engines:
                        if ran(find_record(results, scenario.id, engine, first, variant)):
                            cells[engine] += f"; {label}: {step[engine]}"
                    break
            name = scenario.id + (f" [{variant}]" if variant else "")
            rows.append([f"[{name}]({links.scenario(scenario.id)})"] + [cells[e] for e in engines])
    return tabulate(rows, ["scenario"] + engines, tablefmt="github")


def claims_matrix(results: dict, engines: List[str], links: Links) -> str:
    """Every claim of every scenario against every engine: did what the source says hold?"""
    from compare.scenarios import catalog

    rows = []
    for scenario in catalog().values():
        for claim in scenario.claims:
            rows.append([f'<a id="{claim_anchor(scenario.id, claim.id)}"></a>[{scenario.id}]'
                         f"({links.scenario(scenario.id)}): {claim.id}", claim.source]
                        + [claim_verdicts(results, scenario, e, claim.id) for e in engines])
    return tabulate(rows, ["claim", "source"] + engines, tablefmt="github")


def scenario_index(results: dict, links: Links) -> List[str]:
    """One heading per scenario (the guide links to these), its question and its page."""
    from compare.guide import anchor as guide_anchor
    from compare.scenarios import catalog

    out = []
    for scenario in catalog().values():
        out += [f'### <a id="{scenario.id}"></a><a id="{guide_anchor(scenario.id)}"></a>{scenario.id}', "",
                f"{scenario.question} [Claims, steps and the code that ran]({links.scenario(scenario.id)}).", ""]
    return out


def scenario_page(results: dict, scenario, engines: List[str], links: Links, level: int = 1) -> str:
    """One scenario in full: sources, claims, every step of every engine, the code that ran."""
    from compare.observations import semantics
    from compare.scenarios import SOURCES

    out = [f'{"#" * level} <a id="{detail_anchor(scenario.id)}"></a>{scenario.id}', "",
           f"{scenario.question} ([Summary]({links.main(scenario.id)}))", "",
           "Sources: " + "; ".join(SOURCES.get(s, s) for s in scenario.sources), ""]
    if scenario.claims:
        rows = [[f"[{c.text}]({links.main(claim_anchor(scenario.id, c.id))})", c.source]
                + [claim_verdicts(results, scenario, e, c.id) for e in engines] for c in scenario.claims]
        out += [tabulate(rows, ["claim", "source"] + engines, tablefmt="github"), ""]
    rows = []
    for engine in engines:
        for record in results["results"]:
            if record["scenario"] != scenario.id or record["engine"] != engine:
                continue
            if not ran(record):
                if record["init"] == scenario.inits[0] and record["variant"] == scenario.variants[0]:
                    rows.append([engine, "", "", record["status"], record.get("reason") or
                                 (record.get("error") or {}).get("message", "")])
                continue
            label = record["init"] + (f" [{record['variant']}]" if record["variant"] else "")
            first = find_record(results, scenario.id, engine, scenario.inits[0], record["variant"])
            if record is not first and first is not None and semantics(first) == semantics(record):
                continue  # the other initialisation did the same: its steps would repeat these
            for i, step in enumerate(record["steps"]):
                moved = changed_names(step["changed"], record.get("tensors"))
                error = step.get("error")
                rows.append([f'<a id="{step_anchor(record, i)}"></a>{engine}', label, f"{i + 1}. {step['label']}",
                             moved or "nothing", f"{error['type']}: {error['message'][:160]}" if error else ""])
    out += ["Steps (from the constant initialisation; from the random one only where it differs):", "",
            tabulate(rows, ["engine", "init", "step", "tensors that changed", "exception"], tablefmt="github"), ""]
    values = []
    for engine in engines:
        for record in results["results"]:
            if record["scenario"] == scenario.id and record["engine"] == engine and record.get("values"):
                label = record["init"] + (f" [{record['variant']}]" if record["variant"] else "")
                values.append([engine, label, "; ".join(f"{k} = {summarise_value(v)}"
                                                        for k, v in record["values"].items())])
    if values:
        out += [tabulate(values, ["engine", "init", "recorded values"], tablefmt="github"), ""]
    code = [f"<details><summary>{engine}</summary>\n\n```python\n{scenario.source_code(engine)}```\n\n</details>"
            for engine in engines if scenario.source_code(engine)]
    if code:
        out += ["The code that ran:", ""] + code + [""]
    return wrap_prose("\n".join(out))


def wrap_prose(text: str, width: int = 100) -> str:
    """Fold long paragraphs and list items (never tables, headings, HTML or code) and unpad
    tables, so that the Markdown reads in an editor; the rendered page is the same."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):  # tables unpadded: the padding made up half the page
            line = re.sub(r"-{3,}", "---", line) if re.fullmatch(r"\|[-|: ]+\|", line) else re.sub(r" {2,}", " ", line)
        if fenced or len(line) <= width or line.startswith(("|", "#", "<", "```", "    ")):
            out.append(line)
            continue
        indent = "  " if line.startswith("- ") else ""
        out.append(textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False,
                                 break_on_hyphens=False))
    return "\n".join(out)


def performance_section(performance: dict) -> List[str]:
    if not performance["rows"]:  # a bench run that timed the report and the tests only
        out = ["## Performance", "", f"From `compare bench` ({performance['source']}).", ""]
        return out + report_timings(performance)
    settings = performance.get("settings") or {}
    out = [
        "## Performance",
        "",
        f"From `compare bench` ({performance['source']}): {settings.get('repeats')} repetitions after "
        f"{settings.get('warmup')} warm-up iterations, on {settings.get('device')}, one thread per framework; "
        "ratios against each engine's baseline idiom are taken pair by pair within a repetition (median, "
        "interquartile range). Predicted ratios come from a FLOP and memory model of each idiom, not from "
        f"timings; a mark means the measurement is more than {100 * settings.get('tolerance', 0.25):.0f} % off "
        "the prediction. Memory: " + (performance.get("memory_note") or "") + ".",
        "",
    ]
    rows = []
    for r in performance["rows"]:
        if r.get("status") != "ok":
            rows.append([r.get("engine"), r.get("size"), r.get("idiom"), r.get("status"), "", "", "", r.get("reason", "")])
            continue
        # no prediction where the bench could not count FLOPs (torch missing): measured only
        ratio = f"{r['ratio_median']:.2f} ({r['ratio_iqr']:.2f}) / {fmt_ratio(r.get('predicted_ratio'))}" + (
            " *" if r.get("within_tolerance") is False else "")
        memory = ""
        if r.get("memory_ratio") is not None:
            memory = f"{r['memory_ratio']:.2f} / {fmt_ratio(r.get('predicted_memory_ratio'))}" + (
                " *" if r.get("memory_within_tolerance") is False else "")
        peak = f"{r['peak_bytes'] / 2**20:.1f}" if r.get("peak_bytes") is not None else ""
        rows.append([r["engine"], r["size"], r["idiom"], f"{r['ms_median']:.3g}", peak, ratio, memory,
                     r.get("flops_formula", "")])
    out += [tabulate(rows, ["engine", "size", "idiom", "ms / iteration", "peak MiB", "time ratio (IQR) / predicted",
                            "memory ratio / predicted", "FLOP model"], tablefmt="github"), ""]
    ok = [r for r in performance["rows"] if r.get("status") == "ok"]
    # how each engine's baseline ran (the Keras custom step: tf.function, jax.jit or eager)
    wrapped = {(r["engine"], r["size"]): (r.get("facts") or {}).get("wrapped") for r in ok if r["idiom"] == r["baseline"]}
    time_misses = [r for r in ok if r.get("within_tolerance") is False]
    memory_misses = [r for r in ok if r.get("memory_within_tolerance") is False]
    if time_misses or memory_misses:
        toy_time = sorted({f"{r['engine']} {r['idiom']}" for r in time_misses if r["size"] == "toy"})
        other_time = sorted({f"{r['engine']} {r['size']} {r['idiom']}" for r in time_misses if r["size"] != "toy"})
        compiled = sorted({f"{r['engine']} {r['size']} {r['idiom']}" for r in memory_misses
                           if wrapped.get((r["engine"], r["size"])) in ("tf.function", "jax.jit")})
        other_memory = sorted({f"{r['engine']} {r['size']} {r['idiom']}" for r in memory_misses} - set(compiled))
        out.append("Where the model misses:")
        if toy_time:
            out.append(f"- time at toy size ({', '.join(toy_time)}): an iteration of the toy GAN is about 1e7 "
                       "FLOPs, so fixed per-call costs dominate, and the model counts FLOPs only; the combined "
                       "idioms make four Keras calls per iteration where the custom step makes one.")
        if compiled:
            out.append(f"- memory ({', '.join(compiled)}): the ratio is taken against a custom step compiled as one "
                       "program (tf.function, jax.jit), whose peak the model, which follows what eager PyTorch "
                       "keeps alive, does not describe; the combined idioms run as several smaller programs.")
        for what, rows in (("time", other_time), ("memory", other_memory)):
            if rows:
                out.append(f"- {what} ({', '.join(rows)}): not explained by this run.")
        out.append("")
    return out + report_timings(performance)


def report_timings(performance: dict) -> List[str]:
    """The report's and the tests' wall times and the account of the report's time, if measured."""
    out = []
    for lines in (report_figures(performance.get("report_floor"), performance.get("suite")),
                  floor_account(performance.get("report_floor") or {})):
        out += lines + [""] if lines else []
    return out


def report_figures(floor: Optional[dict], suite: Optional[dict]) -> List[str]:
    """The report's and the tests' wall times from `compare bench --report-floor --suite`, each
    beside its floor, the ratio and what it aims at, as Markdown lines."""
    lines = []
    if floor and not floor.get("runs"):  # a bench file from before the warm and edited runs were measured
        lines += [f"`python -m compare report` took {floor['report_s']:.1f} s; starting the same {floor['processes']} "
                  f"engine processes to import their frameworks and exit took {floor['floor_s']:.1f} s: "
                  f"{floor['ratio']:.2f} times the floor."]
    elif floor:
        lines += [f"`python -m compare report` ({', '.join(floor.get('engines') or [])}, both dtypes) against its "
                  f"floor, starting the same {floor['processes']} engine processes to import their frameworks and "
                  f"exit ({floor['floor_s']:.1f} s), measured back to back in one run:", ""]
        rows = [[r["what"] + (f" ({floor['edited_scenario']})" if r["name"] == "edited" else ""),
                 f"{r['seconds']:.1f}", f"{floor['floor_s']:.1f}", fmt_ratio(r["ratio"]),
                 f"{r['aim']:g}" + ("" if r["ratio"] is None or r["ratio"] <= r["aim"] else " (missed)"),
                 r["exit_status"]] for r in floor["runs"]]
        lines += [tabulate(rows, ["report", "seconds", "floor s", "ratio", "aim (times the floor)", "exit status"],
                           tablefmt="github", disable_numparse=True)]
    if suite:
        rows = [[f"`{t['command']}`", f"{t['seconds']:.1f}", f"{t['aim_s']:g}" + (
            "" if t["seconds"] <= t["aim_s"] else " (missed)"), t["summary"]] for t in suite.values()]
        lines += ([""] if lines else []) + [
            tabulate(rows, ["tests", "seconds", "aim s", "outcome"], tablefmt="github", disable_numparse=True)]
    return lines


def fmt_ratio(value: Optional[float]) -> str:
    return "no prediction" if value is None else f"{value:.2f}"


def floor_account(floor: dict) -> List[str]:
    """Where the report's time went, as Markdown lines, from ``compare bench --report-floor``
    (the bench prints them; the report's performance section shows them)."""
    account = floor.get("account")
    if not account or "floor_engine_s" not in floor:
        return []
    total = account["engine_seconds"]
    jobs = floor.get("jobs") or 1
    budget = 1.5 * floor["floor_s"] * jobs  # engine-seconds that fit in 1.5 times the floor
    extra = total["seconds"] - floor["floor_engine_s"]
    lines = [
        f"The floor's processes ran for {floor['floor_engine_s']:.1f} engine-seconds, {jobs} at a time; "
        f"the report's for {total['seconds']:.1f}: importing {total['import']:.1f}, parity stages "
        f"{total['parity']:.1f}, scenarios {total['scenarios']:.1f}, interpreter start-up and writing "
        f"results {total['other']:.1f}. 1.5 times the floor holds at most {budget:.1f} engine-seconds, "
        f"{budget - floor['floor_engine_s']:.1f} more than the floor's processes use; the report's "
        f"processes use {extra:.1f} more.", "",
    ]
    families = account["scenario_families"]
    names = sorted({f for per in families.values() for f in per})
    rows = []
    for engine, per in families.items():
        processes = [p for p in account["processes"] if p["engine"] == engine]
        rows.append([engine, f"{sum(p['import'] for p in processes):.1f}", f"{sum(p['parity'] for p in processes):.1f}"]
                    + [f"{per.get(f, 0.0):.1f}" for f in names])
    lines += [tabulate(rows, ["engine (both dtypes)", "import s", "parity s"] + [f"{f} scenarios s" for f in names],
                       tablefmt="github"), ""]
    lines.append("Costliest scenarios (all inits and variants): " + "; ".join(
        f"{c['scenario']} on {c['engine']} {c['seconds']:.1f} s" for c in account["costliest_scenarios"]) + ".")
    return lines


def report_parts(results: dict, links: Links) -> Dict[str, str]:
    """The main page in three parts: the title and run, the answers, the rest."""
    from compare.answers import answers_section

    env = results["environment"]
    parity = results["configs"][PARITY.name]
    incomplete = [f"{e} ({d})" for e, i in results["engines"].items() for d, r in i["runs"].items()
                  if r["status"] in ("failed", "timeout")]
    failing = sorted({f"{r['engine']} {r['dtype']} {r['stage']}" for r in results["parity"]
                      if r["config"] == PARITY.name and not r["holds"]})
    engines = list(results["engines"])
    head = [
        "# compare: PyTorch and Keras, one toy GAN, the same steps",
        "",
        f"Generated {results['generated']} by compare {env['compare']} on {env['platform']}, Python {env['python']}, "
        f"engines {', '.join(engines)}. Every sentence below is computed from this run (the performance section "
        "from the `compare bench` run it names); each engine named in an answer links to the step that shows it.",
        "",
    ]
    if incomplete:
        head += [f"**Incomplete run**: {', '.join(incomplete)} produced no result.", ""]
    answers = ["## Answers", ""] + answers_section(results, links)
    parts = []
    if results["results"]:
        parts += [
            "## Scenarios",
            "",
            "Each cell: whose parameters changed (bit for bit) over the whole scenario, whose state alone "
            "changed in brackets, and the exception where the idiom raised. Scenarios run in float32 from "
            "the article's constant initialisation and from seeded random weights; a cell shows both where "
            "they differ. Where engines with the same outcome differ at one step, the cell names that step "
            "(from the constant initialisation). Each scenario's page has its claims, every step and the code "
            "that ran.",
            "",
            scenario_matrix(results, engines, links),
            "",
        ]
        parts += rounding_notes(results)
        parts += init_notes(results)
        parts += [
            "## Claims",
            "",
            "Claims from the sources, and whether each held on each engine (n/a: the claim does not speak "
            "about that engine, or the engine did not run it; where the verdict differs between "
            "initialisations or variants, each is named):",
            "",
            claims_matrix(results, engines, links),
            "",
            "## Scenario index",
            "",
        ]
        parts += scenario_index(results, links)
    parts += [
        "## Parity with PyTorch",
        "",
        "The toy GAN (the first article's architecture, `compare/models/toy`) is built in every engine from the same "
        "seeded numpy weights and fed the same numpy data. Stages, as in TensorFlow's guide on validating "
        "numerical equivalence: structure (names, shapes, weight-port round trip), forward passes of G and D in "
        "training and inference mode (with the BN state they leave), the gradients of one D loss and one G loss, "
        "one canonical iteration and ten. Each stage compares losses, outputs, gradients, every parameter "
        "and every state tensor against PyTorch.",
        "",
        "Configuration that removes every known cause of disagreement (each cause is measured below): "
        + ", ".join(f"{k} = {v}" for k, v in parity.items() if k != "name") + ".",
        "",
    ]
    parts += parity_section(results)
    parts += [
        f"Overall: {'every parity check holds' if not failing else 'checks that fail: ' + ', '.join(failing)}.",
        "",
    ]
    parts += tolerance_notes(results)
    parts += ["", "## Rules that explain a difference", ""]
    parts += rules_section(results) or ["No rule was needed."]
    parts += [
        "",
        "## Measured framework facts",
        "",
        "What each engine's BatchNorm keeps as its moving variance after one batch (compared with numpy's "
        "biased and unbiased estimates), whether its float64 results lie on the float32 grid (a sign that "
        "the layer computed in float32), and op-level probes of dtype handling.",
        "",
        facts_section(results),
        "",
        "## Parity pitfalls",
        "",
        f"Each default restored, one at a time: the largest difference from {REFERENCE} after the named rules, "
        "over every stage; * marks an effect above the tolerance.",
        "",
        pitfalls_section(results),
        "",
    ]
    if results.get("performance"):
        parts += performance_section(results["performance"])
    if results.get("matrix"):
        from compare.matrix_view import report_section

        parts += report_section(results["matrix"])
    parts += [
        "## Engines",
        "",
        engine_section(results),
        "",
        "## Environment",
        "",
        tabulate([[k, v or "not installed"] for k, v in env["packages"].items()], ["package", "version"],
                 tablefmt="github"),
        "",
        f"CPU: {env.get('cpu', 'not recorded')}, {env.get('cpu_count')} cores. "
        + ("Variables of the caller's environment that the runner did not pass to the engines (it sets "
           f"its own): {', '.join(env['removed_variables'])}." if env.get("removed_variables") else
           "The caller's environment set no variable that the runner controls."),
        "",
    ]
    return {"head": wrap_prose("\n".join(head)), "answers": wrap_prose("\n".join(answers)),
            "rest": wrap_prose("\n".join(parts))}


def render_markdown(results: dict, links: Optional[Links] = None) -> str:
    """REPORT.md: the answers first, then short tables; each scenario in full is on its page."""
    parts = report_parts(results, links or Links())
    return "\n".join([parts["head"], parts["answers"], parts["rest"]])


def scenario_pages(results: dict, html: bool = False) -> Dict[str, str]:
    """Each scenario's page (Markdown), keyed by scenario id."""
    from compare.scenarios import catalog

    engines = list(results["engines"])
    return {sid: scenario_page(results, scenario, engines, Links(html, here=sid), level=3 if html else 1)
            for sid, scenario in catalog().items()} if results["results"] else {}


# held back while the files are swapped
SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}


class ReplacedThenInterrupted(KeyboardInterrupt):
    """A signal that arrived while the files were swapped, delivered once every new file was in place."""


def write_bytes(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open file ``fd``, fsync and close it."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def hidden_name(path: str, kind: str) -> str:
    """A name beside ``path`` for its new version (kind "tmp") or its backup ("old")."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{kind}-{name}-{os.getpid()}-{secrets.token_hex(4)}")


def replace_all(texts: Dict[str, str]) -> None:
    """Replace every file of ``texts`` (path -> text, written as UTF-8) or none of them.

    Each text goes to a hidden file beside its target and is fsynced; only then are the
    targets replaced, with SIGINT, SIGTERM and SIGHUP held back, and each old file is kept
    as a hidden hard link until the last rename succeeded, so that a failure part-way puts
    every old file back. A signal that arrived meanwhile is delivered afterwards: a
    KeyboardInterrupt then is a ReplacedThenInterrupted."""
    temps: Dict[str, str] = {}
    backups: Dict[str, str] = {}
    replaced: List[str] = []
    complete = False
    try:
        for path, text in texts.items():
            temps[path] = hidden_name(path, "tmp")
            # a new file, with the permissions (umask) any file gets
            fd = os.open(temps[path], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            write_bytes(fd, text.encode("utf-8"))
        with signals_held():  # the renames finish or are undone
            try:
                for path in texts:
                    if os.path.lexists(path):
                        backups[path] = hidden_name(path, "old")
                        keep_old(path, backups[path])
                for path, temp in temps.items():
                    os.replace(temp, path)
                    replaced.append(path)
                for directory in {os.path.dirname(os.path.abspath(p)) for p in texts}:
                    fsync_folder(directory)
            except BaseException:
                roll_back(replaced, backups)
                raise
            remove(backups.values())
            complete = True
    except BaseException as exc:
        remove([t for p, t in temps.items() if p not in replaced] + [b for p, b in backups.items() if p not in replaced])
        if complete and isinstance(exc, KeyboardInterrupt):  # raised by a held-back signal, now delivered
            raise ReplacedThenInterrupted(*exc.args) from None
        raise


@contextlib.contextmanager
def signals_held():
    """Hold back SIGINT, SIGTERM and SIGHUP, and deliver those that arrived on leaving.
    Blocking them in this thread (pthread_sigmask) is not enough: the kernel hands a
    process's signal to any thread that does not block it (numpy's, say), so in the main
    thread their Python handlers are also swapped for one that only takes note."""
    arrived: List[int] = []
    swapped = {}
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) is not None:  # None: a handler not set from Python, left alone
                swapped[sig] = signal.signal(sig, lambda signum, frame: arrived.append(signum))
    blocked = SIGNALS - signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS) if hasattr(signal, "pthread_sigmask") else ()
    try:
        yield
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)  # a pending one reaches the note-taker
        for sig, handler in swapped.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)


def keep_old(path: str, backup: str) -> None:
    """A second name for the old file (a copy where the file system has no hard links)."""
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS) or os.path.islink(path):
            raise
        shutil.copy2(path, backup)


def roll_back(replaced: List[str], backups: Dict[str, str]) -> None:
    """Put the old file back (or none, where there was none) wherever a new one was renamed
    into place. A backup that cannot be put back stays: it is the only copy left."""
    for path in replaced:
        try:
            if path in backups:
                os.replace(backups[path], path)
            else:
                os.unlink(path)
        except OSError:
            continue


def fsync_folder(directory: str) -> None:
    """Make the renames in ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(paths) -> None:
    """Remove what is left of temporary files; one that cannot be removed is only clutter."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same real path (symlinks and .. resolved) or,
    where both exist, the same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text``: a reader sees the old file or the new one, never half of one."""
    replace_all({path: text})


def results_text(results: dict) -> str:
    return json.dumps(results, indent=1) + "\n"


def keep_results(results: dict) -> str:
    """Save results.json where the report could not be written: a new file in the system's
    temporary folder, or in the current one if that fails. Returns its path."""
    data = results_text(results).encode("utf-8")
    for directory in (tempfile.gettempdir(), os.getcwd()):
        path = None
        try:
            fd, path = tempfile.mkstemp(prefix="compare-results-", suffix=".json", dir=directory)
            write_bytes(fd, data)
            return path
        except OSError as exc:
            error = exc
            if path:
                remove([path])
    raise error


def clash_with(path: str, others: Dict[str, str]) -> Optional[str]:
    """The first key of ``others`` whose path names the same file as ``path``, or None."""
    return next((name for name, other in others.items() if same_file(path, other)), None)


def guide_clash(paths: Dict[str, str]) -> Optional[Tuple[str, str]]:
    """(guide key, other key) where the guide or its HTML version is the same file as another
    output, or None."""
    for key in ("guide", "guide.html"):
        other = clash_with(paths[key], {k: v for k, v in paths.items() if k not in ("guide", "guide.html")}
                           | ({"guide": paths["guide"]} if key == "guide.html" else {}))
        if other:
            return key, other
    return None


def output_paths(out_dir: str, guide_path: Optional[str] = None) -> Dict[str, str]:
    """Where each output goes, keyed as render_all keys the texts."""
    return {"results.json": os.path.join(out_dir, "results.json"), "REPORT.md": os.path.join(out_dir, "REPORT.md"),
            "report.html": os.path.join(out_dir, "report.html"),
            "guide": guide_path or os.path.join(out_dir, "migration-guide.md"),
            "guide.html": os.path.splitext(guide_path or os.path.join(out_dir, "migration-guide.md"))[0] + ".html"}


def render_all(results: dict, guide_path: str, out_dir: str) -> Dict[str, str]:
    """Every output file's text, keyed by its name under ``out_dir`` (the guide by "guide")."""
    from compare.guide import render_guide, render_guide_html
    from compare.html import render_html

    guide_dir = os.path.dirname(os.path.abspath(guide_path))
    link = os.path.relpath(os.path.join(out_dir, "REPORT.md"), guide_dir)
    html_link = os.path.relpath(os.path.join(out_dir, "report.html"), guide_dir)
    texts = {
        "results.json": results_text(results),
        "REPORT.md": render_markdown(results),
        "report.html": render_html(results, report_parts(results, Links(html=True)), scenario_pages(results, html=True)),
        "guide": render_guide(results, link.replace(os.sep, "/")),
        "guide.html": render_guide_html(results, html_link.replace(os.sep, "/")),
    }
    texts.update({page_name(sid): text for sid, text in scenario_pages(results).items()})
    if results.get("matrix"):
        from compare.matrix_view import PAGE, render_page

        texts[PAGE] = render_page(results["matrix"])
    return texts


def write_report(out_dir: str, results: dict, guide_path: Optional[str] = None) -> List[str]:
    """Replace results.json, REPORT.md, report.html, the scenario pages and the migration
    guide as one set (see replace_all), all rendered before the first is written. Returns
    their paths."""
    paths = output_paths(out_dir, guide_path)
    clash = guide_clash(paths)
    if clash:
        raise ValueError(f"the guide's {paths[clash[0]]} is the same file as {paths[clash[1]]}")
    texts = render_all(results, paths["guide"], out_dir)
    pages = [name for name in texts if name not in paths]  # the scenario pages, in a folder of out_dir
    for name in pages:
        paths[name] = os.path.join(out_dir, *name.split("/"))
    if pages and os.path.isdir(out_dir):  # a removed out_dir stays removed: replace_all then says so
        for folder in sorted({os.path.dirname(paths[name]) for name in pages}):
            os.makedirs(folder, exist_ok=True)
    replace_all({paths[name]: text for name, text in texts.items()})
    return [paths[name] for name in texts]
