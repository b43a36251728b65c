"""The migration guide: idioms mapped across PyTorch, Keras 3 and Keras 2, and the traps.

Each idiom row names the scenarios that ran it; the evidence column and the traps are
generated from the observations in results.json, and the code shown for each answer is
quoted from the scenario implementation that ran.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

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


def traps(results: dict) -> List[str]:
    """Scenarios where the same code (or its counterpart) had different outcomes on different
    engines, and claims that held on some engines and not on others."""
    from compare.scenarios import catalog

    out = []
    for scenario in catalog().values():
        for variant in scenario.variants:
            for init in scenario.inits:
                outcome = {e: c for e, c in outcomes(results, scenario.id, init, variant).items() if c != "n/a"}
                if len(set(outcome.values())) > 1:
                    label = scenario.id + (f" [{variant}]" if variant else "") + f", {init} init"
                    out.append(f"- **{label}**: {scenario.question} Outcome: {grouped(outcome)}.")
                    break  # one init is enough to show the trap
        for claim in scenario.claims:
            verdicts: Dict[str, set] = {}
            for record in results["results"]:
                if record["scenario"] != scenario.id:
                    continue
                for v in record.get("claims", []):
                    if v["claim"] == claim.id and v["verdict"] != "not-applicable":
                        verdicts.setdefault(v["verdict"], set()).add(record["engine"])
            if len(verdicts) > 1 or "does-not-hold" in verdicts:
                summary = "; ".join(f"{verdict} on {', '.join(sorted(engines))}" for verdict, engines in verdicts.items())
                out.append(f"- **{scenario.id}**, claim from {claim.source}: \"{claim.text}\" {summary}.")
    return out


def numeric_traps(results: dict) -> List[str]:
    out = []
    for engine, info in results["engines"].items():
        for dtype, run in info["runs"].items():
            if run["status"] != "ok":
                continue
            out.append(f"- {ENGINE_NAMES[engine]}, {dtype}: BatchNorm keeps the {run['bn_estimator']['estimator']} "
                       f"batch variance as its moving variance"
                       + (" and computes in float32 although float64 was asked for"
                          if dtype == "float64" and run["bn_estimator"]["on_float32_grid"] else "") + ".")
    for p in results["pitfalls"]:
        if not p["holds"] and p["dtype"] == "float64":
            out.append(f"- {p['description']}: {ENGINE_NAMES[p['engine']]} differs from PyTorch by up to "
                       f"{p['max_abs_diff']:.1e} ({p['worst_stage']}).")
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
    parts += ["## Traps: the same idiom, different behaviour", "",
              "Scenarios whose outcome differs between engines, and source claims that do not hold everywhere.",
              ""]
    parts += traps(results) or ["None found in this run."]
    parts += ["", "## Numerical traps", "", "Measured in the parity runs (see the report's parity section).", ""]
    parts += numeric_traps(results)
    parts.append("")
    return "\n".join(parts)
