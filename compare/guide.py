"""The migration guide: idioms mapped across PyTorch, Keras 3 and Keras 2, and the traps.

Each idiom row names the scenarios that ran it; the evidence column and the traps are
generated from the observations in results.json, and the code shown for each answer is
quoted from the scenario implementation that ran.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

from tabulate import tabulate

from compare.report import find_record, moved_cell

ENGINE_NAMES = {
    "torch": "PyTorch", "keras-tensorflow": "Keras 3 / TensorFlow", "keras-jax": "Keras 3 / JAX",
    "keras-torch": "Keras 3 / PyTorch", "tf-keras": "Keras 2 (tf_keras)",
}


@dataclasses.dataclass(frozen=True)
class Idiom:
    goal: str
    torch: str
    keras3: str
    keras2: str
    scenarios: Sequence[str]


IDIOMS = [
    Idiom("Step G only in the G step", "`optimizer_G.step()`, the optimizer built on `G.parameters()`",
          "`optimizer_G.apply(grads, G.trainable_variables)` in a custom step",
          "`optimizer_G.apply_gradients(zip(grads, G.trainable_weights))`", ["scope.g_step"]),
    Idiom("Keep the D step's gradient out of G", "`D(fake.detach())`",
          "`D(keras.ops.stop_gradient(fake))`, or differentiate with respect to D's variables only",
          "`D(tf.stop_gradient(fake))`", ["detach.reuse_with_detach", "detach.keras_stop_gradient"]),
    Idiom("Freeze D while G trains", "`D.requires_grad_(False)`: optional, saves D's weight gradients",
          "`D.trainable = False`: also switches D's BatchNormalization to inference mode",
          "`D.trainable = False` before compiling the combined model",
          ["scope.requires_grad_off", "freeze.frozen_bn_mode", "freeze.classic_recipe"]),
    Idiom("Clear gradients", "`optimizer.zero_grad()` (None by default: the step skips the parameter)",
          "nothing on TensorFlow and JAX (gradients are returned, not stored); `model.zero_grad()` on the "
          "PyTorch backend", "nothing (gradients are returned, not stored)", ["scope.zero_grad_then_step"]),
    Idiom("Train G through D", "`loss(D(G(z)), ones).backward(); optimizer_G.step()`",
          "`combined = keras.Sequential([G, D])`, compiled, `combined.train_on_batch(z, ones)`",
          "the same", ["freeze.combined_no_freeze", "freeze.classic_recipe"]),
    Idiom("Change what is frozen between calls", "`requires_grad_` any time; the optimizer decides what steps",
          "set `trainable`, then check whether the compiled model follows (see the freeze scenarios)",
          "set `trainable`, then compile again", ["freeze.flip_after_compile", "freeze.flip_after_first_call",
                                                   "freeze.flip_and_recompile", "freeze.toggle_every_call"]),
    Idiom("One optimizer per model", "`Adam(G.parameters())`, `Adam(D.parameters())`",
          "one optimizer instance per compiled model", "the same", ["freeze.shared_optimizer"]),
    Idiom("Backward twice through one forward", "`loss.backward(retain_graph=True)`",
          "`tf.GradientTape(persistent=True)` on TensorFlow; `jax.vjp` keeps the forward on JAX",
          "`tf.GradientTape(persistent=True)`", ["detach.retain_graph", "detach.tape_twice"]),
]

# For a reader who knows PyTorch: the Keras code that ran in place of three PyTorch lines.
INSTEAD_OF = [
    ("fake.detach()", "detach.keras_stop_gradient", ("keras-tensorflow", "keras-jax")),
    ("D.requires_grad_(False)", "scope.requires_grad_off", ("keras-tensorflow", "tf-keras")),
    ("optimizer_G.step()", "scope.g_step", ("keras-tensorflow", "keras-jax", "keras-torch")),
]


def outcomes(results: dict, scenario_id: str, init: str = "constant", variant: str = None) -> Dict[str, str]:
    from compare.scenarios import catalog

    scenario = catalog().get(scenario_id)
    if scenario is None:
        return {}
    variant = scenario.variants[0] if variant is None else variant
    out = {}
    for engine in results["engines"]:
        record = find_record(results, scenario_id, engine, init, variant)
        if record is not None and record["status"] not in ("unavailable",):
            out[engine] = moved_cell(record)
    return out


def grouped(outcome: Dict[str, str]) -> str:
    """'G (D state): torch, keras-jax; raised ValueError: tf-keras' - engines with the same outcome together."""
    groups: Dict[str, List[str]] = {}
    for engine, text in outcome.items():
        groups.setdefault(text, []).append(engine)
    if len(groups) == 1:
        ((text, engines),) = groups.items()
        return f"{text} on every engine that ran"
    return "; ".join(f"{text}: {', '.join(engines)}" for text, engines in groups.items())


def evidence(results: dict, idiom: Idiom, report_link: str) -> str:
    parts = []
    for scenario_id in idiom.scenarios:
        outcome = outcomes(results, scenario_id)
        if outcome:  # GitHub's heading anchors drop the dots
            parts.append(f"[{scenario_id}]({report_link}#{scenario_id.replace('.', '')}): {grouped(outcome)}")
    return "<br>".join(parts) or "not run"


def call_by_call(record: dict) -> str:
    """'combined.train_on_batch: G; D.train_on_batch: nothing' - whose parameters each call moved."""
    if record["status"] not in ("ok", "raised"):
        return record["status"]
    parts = []
    for step in record["steps"]:
        moved = "+".join(net for net in ("G", "D") if step["changed"][net]["params"]) or "nothing"
        if "error" in step:
            moved += f" (raised {step['error']['type']})"
        parts.append(f"{step['label']}: {moved}")
    return "; ".join(parts)


def differing(results: dict, scenario, engines: Sequence[str], describe) -> Optional[tuple]:
    """(variant, init, {engine: description}) for the first case where these engines' outcomes,
    as ``describe`` puts them, differ."""
    for variant in scenario.variants:
        for init in scenario.inits:
            seen = {}
            for engine in engines:
                record = find_record(results, scenario.id, engine, init, variant)
                if record is not None and record["status"] in ("ok", "raised"):
                    seen[engine] = describe(record)
            if len(seen) > 1 and len(set(seen.values())) > 1:
                return variant, init, seen
    return None


def traps(results: dict) -> List[str]:
    """Where the same code, or its counterpart, behaved differently: across Keras versions and
    backends first (the same Keras code ran on all of them), then PyTorch against Keras."""
    from compare.report import claim_verdicts
    from compare.scenarios import KERAS_IDS, catalog

    keras_engines = [e for e in KERAS_IDS if e in results["engines"]]
    out = ["### The same Keras code on Keras 2, Keras 3 and its backends", "",
           "Scenarios where one Keras implementation ran on several engines and the engines disagreed; "
           "call by call, whose parameters moved.", ""]
    found = False
    for scenario in catalog().values():
        by_function: Dict[object, List[str]] = {}
        for engine in keras_engines:
            if engine in scenario.implementations:
                by_function.setdefault(scenario.implementations[engine], []).append(engine)
        for engines in by_function.values():
            case = differing(results, scenario, engines, call_by_call)
            if case:
                found = True
                variant, init, seen = case
                label = scenario.id + (f" [{variant}]" if variant else "")
                out.append(f"- **{label}** ({init} init). {scenario.question}")
                out += [f"  - {ENGINE_NAMES[e]}: {text}" for e, text in seen.items()]
    if not found:
        out.append("None in this run.")
    out += ["", "### PyTorch against Keras", "",
            "Scenarios where the PyTorch idiom and its Keras counterparts end differently (whose parameters "
            "moved over the whole scenario; whose state alone moved in brackets).", ""]
    for scenario in catalog().values():
        case = differing(results, scenario, ["torch"] + keras_engines, moved_cell)
        if case and "torch" in case[2]:
            variant, init, seen = case
            label = scenario.id + (f" [{variant}]" if variant else "")
            out.append(f"- **{label}** ({init} init): " + "; ".join(f"{ENGINE_NAMES[e]}: {v}" for e, v in seen.items()))
    out += ["", "### Claims that do not hold everywhere", ""]
    for scenario in catalog().values():
        for claim in scenario.claims:
            verdicts = {e: claim_verdicts(results, scenario, e, claim.id) for e in results["engines"]}
            verdicts = {e: v for e, v in verdicts.items() if v != "n/a"}
            if any(v != "holds" for v in verdicts.values()):
                out.append(f"- {scenario.id}, from {claim.source}: \"{claim.text}\" "
                           + "; ".join(f"{ENGINE_NAMES[e]}: {v}" for e, v in verdicts.items()))
    return out


def numeric_traps(results: dict) -> List[str]:
    out = []
    estimators: Dict[str, List[str]] = {}
    for engine, info in results["engines"].items():
        for dtype, run in info["runs"].items():
            if run["status"] != "ok":
                continue
            text = f"keeps the {run['bn_estimator']['estimator']} batch variance"
            if dtype == "float64" and run["bn_estimator"]["on_float32_grid"]:
                text += ", computing in float32 although float64 was asked for"
            estimators.setdefault(text, []).append(f"{ENGINE_NAMES[engine]} {dtype}")
    out += [f"- BatchNorm {text}: {', '.join(where)}." for text, where in estimators.items()]
    effects: Dict[str, List[str]] = {}
    for p in results["pitfalls"]:
        if not p["holds"] and p["dtype"] == "float64":
            effects.setdefault(p["description"], []).append(
                f"{ENGINE_NAMES[p['engine']]} {p['max_abs_diff']:.1e} ({p['worst_stage']})")
    out += [f"- {description}: largest difference from PyTorch in float64: {'; '.join(where)}."
            for description, where in effects.items()]
    return out


def without_recorder(code: str) -> str:
    """The implementation as a user would write it: no decorator, no recorder calls."""
    out, depth = [], 0
    for line in code.splitlines():
        stripped = line.strip()
        if depth > 0 or stripped.startswith(("ctx.step(", "ctx.record(", "@")):
            depth += line.count("(") - line.count(")")
            continue
        out.append(line)
    return "\n".join(out).rstrip()


def render_guide(results: dict, report_link: str = "REPORT.md") -> str:
    """The guide as Markdown; ``report_link`` is the report's path relative to the guide."""
    from compare.scenarios import catalog

    scenarios = catalog()
    rows = [[i.goal, i.torch, i.keras3, i.keras2, evidence(results, i, report_link)] for i in IDIOMS]
    parts = [
        "# Migrating GAN training code between PyTorch, Keras 3 and Keras 2",
        "",
        f"Generated from the run of {results['generated']} ({', '.join(f'{k} {v}' for k, v in results['environment']['packages'].items() if v)}). "
        "Every outcome quoted here is what the engines did in that run; the full evidence, with the code "
        f"that ran in each engine, is in [the report]({report_link}).",
        "",
        "## Idioms",
        "",
        "The evidence column says, for each scenario that exercises the idiom, whose parameters changed "
        "(whose state alone changed in brackets) or what was raised, per engine, from the article's "
        "constant initialisation.",
        "",
        tabulate(rows, ["goal", "PyTorch", "Keras 3", "Keras 2", "evidence"], tablefmt="github"),
        "",
        "## What to write instead",
        "",
    ]
    for line, scenario_id, engines in INSTEAD_OF:
        scenario = scenarios.get(scenario_id)
        if scenario is None:
            continue
        parts += [f"### Instead of `{line}`", "", scenario.question,
                  "(The code that ran, without the recorder's ctx.step and ctx.record calls.)", ""]
        shown: Dict[str, List[str]] = {}  # one block per function, however many engines ran it
        for engine in engines:
            code = scenario.source_code(engine)
            if code:
                shown.setdefault(code, []).append(engine)
        for code, names in shown.items():
            observed = "; ".join(f"{ENGINE_NAMES[e]}: {outcomes(results, scenario_id).get(e, 'not run')}"
                                 for e in names)
            parts += [f"Observed: {observed}.", "", "```python", without_recorder(code), "```", ""]
    parts += ["## Traps: the same idiom, different behaviour", ""]
    parts += traps(results)
    parts += ["", "## Numerical traps", "",
              "Measured in the parity runs (see the report's parity section): what keeps two correct ports "
              "from agreeing to the last digit.", ""]
    parts += numeric_traps(results)
    parts.append("")
    return "\n".join(parts)
