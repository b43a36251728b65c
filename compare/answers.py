"""The answers that open the report, each computed from the run's records.

Each answer is a small function of the results and a ``Links``; ``SCENARIOS`` lists the
scenario ids it reads. A sentence names only the engines and steps it checked, links each
engine to the step that shows it, and says which engines did not run.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from compare.report import Links, differing_steps, find_record, fmt, ran

KERAS = ("keras-tensorflow", "keras-jax", "keras-torch", "tf-keras")
KERAS_3 = ("keras-tensorflow", "keras-jax", "keras-torch")
KERAS_2 = "tf-keras"

SCENARIOS = {
    "freeze": ("scope.g_step", "scope.requires_grad_off", "freeze.combined_no_freeze", "freeze.flip_and_recompile"),
    "detach": ("detach.reuse_without_detach", "detach.reuse_with_detach", "detach.keras_stop_gradient"),
    "keras-2-3": None,  # every scenario of the catalog
    "backends": None,
    "parity": (),  # the parity records and the pitfalls
}


def names(items: List[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def scenario_ids(key: str) -> List[str]:
    from compare.scenarios import catalog

    return list(catalog()) if SCENARIOS[key] is None else list(SCENARIOS[key])


def records(results: dict, scenario: str, engine: str, variant: str = "") -> List[dict]:
    return [r for r in results["results"] if r["scenario"] == scenario and r["engine"] == engine
            and r["variant"] == variant]


def outcome(results: dict, scenario: str, engine: str, fn: Callable[[dict], object], variant: str = ""):
    """``fn`` of the engine's records, one per initialisation, where all ran and agree; else None."""
    found = records(results, scenario, engine, variant)
    if not found or not all(ran(r) for r in found):
        return None
    values = {repr(fn(r)): fn(r) for r in found}
    return next(iter(values.values())) if len(values) == 1 else None


def engine_links(results: dict, links: Links, scenario: str, engines: List[str], step: Callable[[dict], Optional[int]],
                 variant: str = "") -> str:
    """'[torch](...), [keras-jax](...)': each engine linked to the step ``step`` picks in its
    first-initialisation record (the one the scenario's page shows step by step)."""
    out = []
    for engine in engines:
        record = next(r for r in records(results, scenario, engine, variant))
        index = step(record)
        out.append(f"[{engine}]({links.scenario(scenario) if index is None else links.step(record, index)})")
    return names(out)


def not_run(results: dict, scenarios: List[str], engines) -> List[str]:
    """Engines of ``engines`` with no observed record in ``scenarios`` that were not
    merely outside them (not-applicable): unavailable, failed, or absent from the results."""
    out = []
    for engine in engines:
        found = [r for r in results["results"] if r["engine"] == engine and r["scenario"] in scenarios]
        if not any(ran(r) for r in found) and not (found and all(r["status"] == "not-applicable" for r in found)):
            out.append(engine)
    return out


def did_not_run(results: dict, scenarios: List[str], engines) -> str:
    missing = not_run(results, scenarios, engines)
    return f" {names(missing)} did not run {'these scenarios' if len(scenarios) > 1 else scenarios[0]}." if missing else ""


def same_per_init(results: dict, engine: str, a: tuple, b: tuple, fn: Callable[[dict], object]) -> Optional[bool]:
    """Whether ``fn`` gives the same for (scenario, variant) ``a`` and ``b``, initialisation by
    initialisation; None where either did not run."""
    pairs = [(r, find_record(results, b[0], engine, r["init"], b[1])) for r in records(results, a[0], engine, a[1])]
    if not pairs or not all(ran(x) and ran(y) for x, y in pairs):
        return None
    return all(fn(x) == fn(y) for x, y in pairs)


def first_step(record: dict, test: Callable[[dict], bool]) -> Optional[int]:
    return next((i for i, s in enumerate(record["steps"]) if test(s)), None)


def params_moved(net: str) -> Callable[[dict], bool]:
    return lambda step: bool(step["changed"][net]["params"])


def last(record: dict) -> Optional[int]:
    return len(record["steps"]) - 1 if record["steps"] else None


def grouped(cells: Dict[str, str]) -> str:
    """'keras-tensorflow and keras-torch: G+D; keras-jax: none'."""
    by_cell: Dict[str, List[str]] = {}
    for engine, cell in cells.items():
        by_cell.setdefault(cell, []).append(engine)
    return "; ".join(f"{names(e)}: {c}" for c, e in by_cell.items())


def frozen_bn(results: dict, links: Links, engines: List[str]) -> str:
    """The verdicts, on ``engines``, of the claim that a frozen BatchNorm runs in inference mode."""
    from compare.report import claim_anchor, claim_verdicts
    from compare.scenarios import catalog

    if not engines:
        return ""
    scenario, claim = catalog()["scope.requires_grad_off"], "bn-inference-when-frozen"
    verdicts = {e: claim_verdicts(results, scenario, e, claim) for e in engines}
    return f"; claim [{claim}]({links.main(claim_anchor(scenario.id, claim))}) there: {grouped(verdicts)}"


def answer_freeze(results: dict, links: Links) -> str:
    engines = list(results["engines"])
    d_moved = {e: outcome(results, "scope.g_step", e, lambda r: any(params_moved("D")(s) for s in r["steps"]))
               for e in engines}
    kept = [e for e, v in d_moved.items() if v is False]
    moved = [e for e, v in d_moved.items() if v is True]
    out = []
    if kept:
        out.append("For G's step alone, no: G's optimizer step left D's parameters as they were on "
                   + engine_links(results, links, "scope.g_step", kept, lambda r: first_step(r, params_moved("G")))
                   + " (scope.g_step" + (f"; they moved on {names(moved)}" if moved else "") + ").")
    same_g = [e for e in engines if same_per_init(results, e, ("scope.requires_grad_off", ""), ("scope.g_step", ""),
                                                  lambda r: r["digests"]["G"])]
    other_g = [e for e in engines if e not in same_g and same_per_init(
        results, e, ("scope.requires_grad_off", ""), ("scope.g_step", ""), lambda r: r["digests"]["G"]) is False]
    if same_g:
        flops = outcome(results, "scope.requires_grad_off", "torch", lambda r: (
            r["values"].get("backward FLOPs with D trainable"), r["values"].get("backward FLOPs")))
        saved = (f"; on torch it cut the backward pass from {flops[0]} to {flops[1]} FLOPs"
                 if flops and None not in flops else "")
        bench = [r for r in ((results.get("performance") or {}).get("rows") or [])
                 if r.get("engine") == "torch" and r.get("idiom") == "requires-grad-off" and r.get("status") == "ok"]
        if bench:
            saved += " (" + ", ".join(f"{r['ratio_median']:.2f} times the time at {r['size']} size" for r in bench) + ")"
        out.append("Freezing D anyway (requires_grad_(False), trainable = False) gave G bit for bit the same update on "
                   + engine_links(results, links, "scope.requires_grad_off", same_g, last)
                   + (f" and a different one on {engine_links(results, links, 'scope.requires_grad_off', other_g, last)}"
                      if other_g else "") + f" (scope.requires_grad_off{frozen_bn(results, links, other_g)}){saved}.")
    combined = [e for e in KERAS if e in engines and outcome(
        results, "freeze.combined_no_freeze", e, lambda r: bool(r["changed"]["D"]["params"]))]
    frozen = [e for e in KERAS if e in engines and outcome(
        results, "freeze.flip_and_recompile", e, lambda r: bool(r["steps"]) and not r["steps"][-1]["changed"]["D"]["params"])]
    if combined:
        text = ("In Keras, a combined model G+D trained with D never frozen moved D's parameters on "
                + engine_links(results, links, "freeze.combined_no_freeze", combined, lambda r: first_step(r, params_moved("D")))
                + " (freeze.combined_no_freeze)")
        if frozen:
            text += ("; after D.trainable = False and a new compile(), the next call left them unchanged on "
                     + engine_links(results, links, "freeze.flip_and_recompile", frozen, last) + " (freeze.flip_and_recompile)")
        out.append(text + ".")
    return " ".join(out) + did_not_run(results, scenario_ids("freeze"), engines)


def answer_detach(results: dict, links: Links) -> str:
    engines = list(results["engines"])
    out = []
    raised = {e: outcome(results, "detach.reuse_without_detach", e, lambda r: r["error"] and r["error"]["type"])
              for e in engines}
    failing = [e for e, v in raised.items() if v]
    if failing:
        types = sorted({raised[e] for e in failing})
        text = ("Reusing `fake` for G's loss after a D step without detach(): G's backward raised "
                + " or ".join(types) + " on "
                + engine_links(results, links, "detach.reuse_without_detach", failing,
                               lambda r: first_step(r, lambda s: bool(s.get("error"))))
                + " (detach.reuse_without_detach)")
        fine = [e for e in failing if outcome(results, "detach.reuse_with_detach", e, lambda r: r["status"]) == "ok"]
        if fine:
            text += ("; with detach() the same iteration ran on "
                     + engine_links(results, links, "detach.reuse_with_detach", fine, last) + " (detach.reuse_with_detach)")
        out.append(text + ".")
    scenario, with_, without = "detach.keras_stop_gradient", "stop_gradient", "no-stop_gradient"

    def steps_of(r):
        return [s["changed"] for s in r["steps"]], r["status"], r.get("digests")

    checked = {e: same_per_init(results, e, (scenario, with_), (scenario, without), steps_of) for e in engines}
    same = [e for e, v in checked.items() if v is True]
    differ = [e for e, v in checked.items() if v is False]
    broken = [e for e in differ if outcome(results, scenario, e, lambda r: r["status"], without) == "raised"]
    changed = [e for e in differ if e not in broken]
    tail = ""
    if broken:
        tail += "; without it, " + engine_links(results, links, scenario, broken,
                                               lambda r: first_step(r, lambda s: bool(s.get("error"))), without) + " raised"
    if changed:
        tail += "; it changed the outcome on " + engine_links(results, links, scenario, changed, last, without)
    if same:
        out.append("Leaving stop_gradient out of a custom Keras step changed nothing on "
                   + engine_links(results, links, scenario, same, last, without)
                   + f" (every step moved the same tensors, and G and D ended bit for bit the same; {scenario})"
                   + tail + ".")
    elif tail:
        out.append(f"Leaving stop_gradient out of a custom Keras step ({scenario})" + tail[1:] + ".")
    return " ".join(out) + did_not_run(results, scenario_ids("detach"), engines)


def step_differences(results: dict, links: Links, engines: List[str], keep: Callable[[Dict[str, str]], bool]) -> List[str]:
    """'[scenario step k](link): engine cells' for each step where ``keep`` accepts the cells of
    the ``engines`` that ran it (the first initialisation)."""
    from compare.scenarios import catalog

    out = []
    for scenario in catalog().values():
        for variant in scenario.variants:
            seen: Dict[str, list] = {}  # steps with the same cells are named together
            for label, index, cells in differing_steps(results, scenario, variant, engines):
                observed = {e: c for e, c in cells.items()
                            if ran(find_record(results, scenario.id, e, scenario.inits[0], variant))}
                if len(observed) >= 2 and keep(observed):
                    seen.setdefault(grouped(observed), []).append((label, index, next(iter(observed))))
            for text, steps in seen.items():
                label, index, engine = steps[0]
                record = find_record(results, scenario.id, engine, scenario.inits[0], variant)
                target = links.scenario(scenario.id) if index is None else links.step(record, index)
                where = label if len(steps) == 1 else "steps " + names([s[0].split()[-1] for s in steps])
                name = scenario.id + (f" [{variant}]" if variant else "")
                out.append(f"[{name}, {where}]({target}) ({text})")
    return out


def answer_keras_2_3(results: dict, links: Links) -> str:
    engines = [e for e in KERAS if e in results["engines"]]
    missing = not_run(results, scenario_ids("keras-2-3"), engines)
    if KERAS_2 in missing or all(e in missing for e in KERAS_3):
        return f"This run cannot say: {names(missing)} did not run."

    def keras_2_alone(cells):
        return KERAS_2 in cells and len(cells) > 1 and all(cells[KERAS_2] != c for e, c in cells.items() if e != KERAS_2)

    found = step_differences(results, links, engines, keras_2_alone)
    if not found:
        return f"Nothing: in every scenario, each step of {KERAS_2} moved what some Keras 3 backend moved." + did_not_run(
            results, scenario_ids("keras-2-3"), engines)
    return (f"Keras 2 ({KERAS_2}) did something no Keras 3 backend did at: " + "; ".join(found)
            + " (whose parameters moved at that step)."
            + did_not_run(results, scenario_ids("keras-2-3"), engines))


def answer_backends(results: dict, links: Links) -> str:
    from compare.scenarios import catalog

    engines = [e for e in KERAS_3 if e in results["engines"]]
    found = step_differences(results, links, engines, lambda cells: len(set(cells.values())) > 1)
    out = ["At: " + "; ".join(found) + " (whose parameters moved at that step)." if found else
           "At no step of any scenario that two or more of them ran."]
    only: Dict[str, List[str]] = {}
    for scenario in catalog().values():
        applies = [e for e in engines if any(ran(r) for r in records(results, scenario.id, e, scenario.variants[0]))]
        outside = [e for e in engines if all(r["status"] == "not-applicable"
                                             for r in records(results, scenario.id, e, scenario.variants[0]))]
        if applies and outside:
            only.setdefault(names(applies), []).append(f"[{scenario.id}]({links.scenario(scenario.id)})")
    if only:
        out.append("Idioms that exist on some backends only: " + "; ".join(
            f"{', '.join(ids)} (only {where})" for where, ids in only.items()) + ".")
    pairs = {(r["engine"], r["dtype"]) for r in results["parity"] if r["engine"] in engines}
    rule: Dict[str, set] = {}
    for r in results["parity"]:
        if r["engine"] in engines and r.get("rule"):
            for name in r["rule"].split(","):
                rule.setdefault(name.strip(), set()).add((r["engine"], r["dtype"]))
    partial_rules = {name: where for name, where in rule.items() if where != pairs}
    if partial_rules:
        out.append("In parity, " + "; ".join(
            f"[{name}]({links.main('rules-that-explain-a-difference')}) applies to "
            + names([f"{e} {d}" for e, d in sorted(where)]) + " only" for name, where in sorted(partial_rules.items())) + ".")
    return " ".join(out) + did_not_run(results, scenario_ids("backends"), engines)


def answer_parity(results: dict, links: Links) -> str:
    from compare.models.toy import PARITY

    checks = [r for r in results["parity"] if r["config"] == PARITY.name]
    failing = sorted({f"{r['engine']} {r['dtype']} {r['stage']}" for r in checks if not r["holds"]})
    compared = sorted({f"{r['engine']} {r['dtype']}" for r in checks})
    if not compared:
        return "This run compared no engine with the reference."
    out = []
    parity_link = links.main("parity-with-pytorch")
    if failing:
        out.append(f"With the [parity configuration]({parity_link}), these checks fail: {names(failing)}.")
    else:
        worst = max((r for r in checks if isinstance(r["judged_diff"], (int, float))), key=lambda r: r["judged_diff"])
        out.append(f"With the [parity configuration]({parity_link}) every check holds on {len(compared)} engine and dtype "
                   f"pairs (largest difference {fmt(worst['judged_diff'])}, {worst['engine']} {worst['dtype']}"
                   f" {worst['stage']}).")
    broken: Dict[str, dict] = {}
    for p in results["pitfalls"]:
        if not p["holds"] and isinstance(p["max_abs_diff"], (int, float)):
            if p["pitfall"] not in broken or p["max_abs_diff"] > broken[p["pitfall"]]["max_abs_diff"]:
                broken[p["pitfall"]] = p
    if broken:
        ranked = sorted(broken.values(), key=lambda p: -p["max_abs_diff"])
        out.append("Restoring one default at a time breaks it, by (largest difference, where): " + "; ".join(
            f"[{p['pitfall']}]({links.main('pitfall-' + p['pitfall'])}) {fmt(p['max_abs_diff'])} "
            f"({p['engine']} {p['dtype']}, {p['worst_stage']})" for p in ranked) + ".")
    harmless = sorted({p["pitfall"] for p in results["pitfalls"]} - set(broken))
    if harmless:
        out.append(f"Within tolerance on every engine: {names(harmless)}.")
    missing = [f"{e} ({d})" for e, info in results["engines"].items() for d, run in info["runs"].items()
               if run["status"] != "ok"]
    if missing:
        out.append(f"{names(missing)} did not run.")
    return " ".join(out)


ANSWERS = (
    ("freeze", "Do I need `requires_grad_(False)` or `trainable = False`?", answer_freeze),
    ("detach", "Do I need `detach()` or `stop_gradient`?", answer_detach),
    ("keras-2-3", "What changes from Keras 2 to Keras 3?", answer_keras_2_3),
    ("backends", "Where do the Keras 3 backends disagree?", answer_backends),
    ("parity", "What breaks numerical parity, and what does it cost?", answer_parity),
)


def answers_section(results: dict, links: Links) -> List[str]:
    """The answers as Markdown: a heading per question, the answer under it."""
    out = []
    for key, question, answer in ANSWERS:
        out += [f'### <a id="answer-{key}"></a>{question}', "", answer(results, links), ""]
    return out

