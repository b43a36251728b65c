"""The migration guide: the biggest finding first, what to write instead, the idioms mapped
across PyTorch, Keras 3 and Keras 2, and the traps.

Every sentence is generated from results.json and carries the evidence it rests on (a
scenario record and step, a parity-pitfall effect, a measured engine fact), rendered as a
link to the report; ``guide_evidence`` lists them for the tests. Where an engine did not
run, each section that would speak about it says so.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Dict, List, Optional, Sequence, Tuple


from compare.report import claim_verdicts, find_record, moved_cell

ENGINE_NAMES = {
    "torch": "PyTorch", "keras-tensorflow": "Keras 3 / TensorFlow", "keras-jax": "Keras 3 / JAX",
    "keras-torch": "Keras 3 / PyTorch", "tf-keras": "Keras 2 (tf_keras)",
}
INIT = "constant"  # the article's initialisation: the guide quotes it, the report has both


def anchor(scenario_id: str) -> str:
    """The report's heading anchor for a scenario."""
    return "scenario-" + scenario_id.replace(".", "-")


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What one sentence rests on. kind "record": a scenario record (and a step of it, or
    recorded values); "pitfall": a parity-pitfall effect; "run": an engine run's measured
    facts (``name`` a key of the run, ``item`` a key inside it); "engine": the engine's
    entry (``absent``: the engine is not in the run at all)."""
    kind: str
    engine: str
    scenario: str = ""
    init: str = INIT
    variant: str = ""
    step: Optional[str] = None
    values: Tuple[str, ...] = ()
    name: str = ""
    dtype: str = ""
    item: str = ""
    absent: bool = False

    def key(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", None, (), False)}


@dataclasses.dataclass
class Sentence:
    text: str
    evidence: List[Evidence]


def record_ev(scenario: str, engine: str, variant: str = "", step: Optional[str] = None, values=()) -> Evidence:
    return Evidence("record", engine, scenario=scenario, variant=variant, step=step, values=tuple(values))


def cite(evidence: Sequence[Evidence], report_link: str) -> str:
    """The links after a sentence: one per scenario, variant and step, naming the engines."""
    groups: Dict[tuple, List[str]] = {}
    for ev in evidence:
        if ev.kind == "record":
            groups.setdefault((ev.scenario, ev.variant, ev.init, ev.step), []).append(ev.engine)
    measured: Dict[str, List[str]] = {}
    versions = report_link.rsplit("/", 1)[0] + "/versions.md" if "/" in report_link else "versions.md"
    target = {"across versions": versions}  # the matrix's page is beside the report
    for ev in evidence:
        if ev.kind == "pitfall":
            what = f"pitfall {ev.name}"
        elif ev.kind == "run":
            what = f"{ev.name}" + (f" `{ev.item}`" if ev.item else "")
        elif ev.kind == "engine":
            what = "not in this run" if ev.absent else "engine"
        elif ev.kind == "matrix":
            what = "across versions"
        else:
            continue
        measured.setdefault(what, []).append(ev.engine + (f" {ev.dtype}" if ev.dtype else ""))
    other = [(what, f"{what}: {', '.join(e for e in dict.fromkeys(where) if e)}".rstrip(": "))
             for what, where in measured.items()]
    parts = []
    for (scenario, variant, init, step), engines in groups.items():
        where = ", ".join(filter(None, [f"[{variant}]" if variant else "", f"{init} init",
                                        f'step "{step}"' if step else ""]))
        parts.append(f"[{scenario}]({report_link}#{anchor(scenario)}) {where}: {', '.join(dict.fromkeys(engines))}")
    parts += [f"[{text}]({target.get(what, report_link)})" for what, text in other]
    return f"(evidence: {'; '.join(parts)})" if parts else ""


def render_sentences(sentences: Sequence[Sentence], report_link: str, bullet: bool = True) -> List[str]:
    return [("- " if bullet else "") + f"{s.text} {cite(s.evidence, report_link)}".rstrip() for s in sentences]


# --- which engines ran ---------------------------------------------------------------------

def engine_state(results: dict, engine: str) -> Optional[str]:
    """None when the engine ran the scenarios, else why not."""
    from compare.program import SCENARIO_DTYPE

    info = results["engines"].get(engine)
    if info is None:
        return "not selected for this run"
    if not info.get("available", True):
        return f"unavailable ({info.get('reason', 'not installed')}; install: `{info.get('install', '')}`)"
    run = info["runs"].get(SCENARIO_DTYPE)
    if run is None or run["status"] != "ok":
        return f"its {SCENARIO_DTYPE} run {run['status'] if run else 'did not happen'}"
    return None


def ran(results: dict, engines: Sequence[str]) -> List[str]:
    return [e for e in engines if engine_state(results, e) is None]


def not_run(results: dict, engines: Sequence[str], about: str) -> List[Sentence]:
    """A sentence per reason, naming the engines of ``engines`` that did not run: ``about``
    says nothing of them."""
    groups: Dict[str, List[str]] = {}
    for engine in engines:
        state = engine_state(results, engine)
        if state is not None:
            groups.setdefault(state, []).append(engine)
    return [Sentence(f"{join_names(es)} did not run ({state}): {about} says nothing about "
                     f"{'it' if len(es) == 1 else 'them'}.",
                     [Evidence("engine", e, absent=e not in results["engines"]) for e in es])
            for state, es in groups.items()]


# --- outcomes, in words --------------------------------------------------------------------

def step_of(record: Optional[dict], label: str) -> Optional[dict]:
    if record is None or record["status"] not in ("ok", "raised"):
        return None
    return next((s for s in record["steps"] if s["label"] == label), None)


def moved_words(changed: dict, tensors: Optional[dict]) -> str:
    """'moved G's parameters only', 'moved D's parameters except conv2.bias', 'moved no parameters'."""
    parts = []
    for net in ("G", "D"):
        names = changed[net]["params"]
        if not names:
            continue
        every = (tensors or {}).get(net, {}).get("params", names)
        missing = [n.split(".", 1)[1] for n in every if n not in names]
        parts.append(f"{net}'s parameters" + (f" except {', '.join(missing)}" if missing else ""))
    if not parts:
        return "moved no parameters"
    if parts == ["G's parameters", "D's parameters"]:
        return "moved G's and D's parameters"
    return "moved " + " and ".join(parts) + (" only" if len(parts) == 1 else "")


def step_words(record: dict, step: dict) -> str:
    if "error" in step:
        return f"raised {step['error']['type']} (\"{step['error']['message'][:160]}\")"
    return moved_words(step["changed"], record.get("tensors"))


def per_engine(results: dict, scenario: str, variant: str, label, engines: Sequence[str]) -> Dict[str, Tuple[str, str]]:
    """engine -> (what the step did, its label) for the engines whose record has that step;
    ``label`` is one label or a function of the engine."""
    out = {}
    for engine in engines:
        record = find_record(results, scenario, engine, INIT, variant)
        name = label(engine) if callable(label) else label
        step = step_of(record, name)
        if step is None and record is not None and record["status"] == "raised":
            raised = next((s for s in record["steps"] if "error" in s), None)
            step, name = raised, raised["label"] if raised else name
        if step is not None:
            out[engine] = (step_words(record, step), name)
    return out


def grouped_sentence(lead: str, scenario: str, variant: str, outcome: Dict[str, Tuple[str, str]]) -> Sentence:
    """'<lead> moved D's parameters only on A and B; moved no parameters on C.'"""
    groups: Dict[str, List[str]] = {}
    for engine, (words, _) in outcome.items():
        groups.setdefault(words, []).append(engine)
    text = "; ".join(f"{words} on {join_names(engines)}" for words, engines in groups.items())
    return Sentence(f"{lead} {text}.", [record_ev(scenario, e, variant, label) for e, (_, label) in outcome.items()])


def join_names(engines: Sequence[str]) -> str:
    names = [ENGINE_NAMES[e] for e in engines]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def keras_label(engine: str, keras: str, torch: str) -> str:
    return torch if engine == "torch" else keras


# --- the biggest finding -------------------------------------------------------------------

def finding(results: dict) -> List[Sentence]:
    from compare.scenarios import ENGINE_IDS, KERAS_IDS

    keras = ran(results, KERAS_IDS)
    out = not_run(results, KERAS_IDS, "this section")
    if not keras:
        return out + [Sentence("No Keras engine ran, so this run holds no finding about freezing D in Keras.",
                               [Evidence("engine", e, absent=e not in results["engines"]) for e in KERAS_IDS])]
    engines = ran(results, ENGINE_IDS)
    recipe = "freeze.classic_recipe"
    d_call = lambda e: keras_label(e, "D.train_on_batch", "D step")
    combined_call = lambda e: keras_label(e, "combined.train_on_batch", "combined step")
    cases = [
        (recipe, "frozen-before-d-trains", d_call,
         "The classic recipe (compile D; D.trainable = False; build and compile the combined model; then "
         "combined.train_on_batch and D.train_on_batch, D never set trainable again; PyTorch: "
         "D.requires_grad_(False) once): D's own training call"),
        (recipe, "frozen-before-d-trains", combined_call, "In the same recipe the combined model's call"),
        (recipe, "frozen-after-d-trains", d_call,
         "When D had been trained once by its own train_on_batch before it was frozen, its later call"),
        ("freeze.flip_after_compile", "", combined_call,
         "When D.trainable = False is set after the combined model was compiled with D trainable, before its "
         "first call (PyTorch: D.requires_grad_(False) after building the optimizer), that call"),
        ("freeze.flip_after_first_call", "", lambda e: keras_label(e, "combined.train_on_batch (2)",
                                                                   "combined step (2)"),
         "When D.trainable = False is set between two calls of a combined model compiled with D trainable "
         "(no new compile), the second call"),
    ]
    for scenario, variant, label, lead in cases:
        outcome = per_engine(results, scenario, variant, label, engines)
        if outcome:
            out.append(grouped_sentence(lead, scenario, variant, outcome))
    return out


# --- what to write instead -----------------------------------------------------------------

# User code for each remedy, and the scenario that ran the same pattern (its code, with the
# harness's recording calls, is in the report).
TOGGLE = '''\
D.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")
D.trainable = False
combined = keras.Sequential([G, D])
combined.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")
for real in batches:
    z = np.random.normal(size=(len(real), 100, 1, 1))
    D.trainable = True                      # before every D call
    fake = G.predict(z, verbose=0)
    D.train_on_batch(real, np.ones((len(real), 1)))
    D.train_on_batch(fake, np.zeros((len(real), 1)))
    D.trainable = False                     # before every combined call
    combined.train_on_batch(z, np.ones((len(real), 1)))'''

RECOMPILE = '''\
D.trainable = False
combined.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")  # after every change
combined.train_on_batch(z, ones)'''

TAPE_STEP = '''\
bce = keras.losses.BinaryCrossentropy()
optimizer_D, optimizer_G = keras.optimizers.Adam(), keras.optimizers.Adam()  # one per model

def train_step(real, z):
    with tf.GradientTape(persistent=True) as tape:
        fake = G(z, training=True)
        errD = (bce(tf.ones((len(real), 1)), D(real, training=True))
                + bce(tf.zeros((len(real), 1)), D(tf.stop_gradient(fake), training=True)))
    optimizer_D.apply_gradients(zip(tape.gradient(errD, D.trainable_weights), D.trainable_weights))
    with tape:  # G's loss through D's new weights
        errG = bce(tf.ones((len(real), 1)), D(fake, training=True))
    optimizer_G.apply_gradients(zip(tape.gradient(errG, G.trainable_weights), G.trainable_weights))
    del tape'''


def toggle_sentences(results: dict) -> List[Sentence]:
    from compare.scenarios import KERAS_IDS

    scenario, out = "freeze.toggle_every_call", []
    keys = ("D moved in D calls", "G moved in G calls", "D moved in G calls", "G moved in D calls")
    groups: Dict[str, List[str]] = {}
    for engine in ran(results, KERAS_IDS):
        record = find_record(results, scenario, engine, INIT, "")
        if record is None or record["status"] != "ok" or not all(k in record["values"] for k in keys):
            continue
        v = record["values"]
        d_calls = sum("D.train_on_batch" in s["label"] for s in record["steps"])
        g_calls = sum(s["label"].endswith("combined.train_on_batch") for s in record["steps"])
        text = (f"D's parameters moved in {v['D moved in D calls']} of {d_calls} D.train_on_batch calls and in "
                f"{v['D moved in G calls']} of {g_calls} combined calls; G's moved in {v['G moved in G calls']} of "
                f"the {g_calls} combined calls and in {v['G moved in D calls']} D calls")
        groups.setdefault(text, []).append(engine)
    for text, engines in groups.items():
        out.append(Sentence(f"{scenario} ran this pattern: {text}, on {join_names(engines)}.",
                            [record_ev(scenario, e, values=keys) for e in engines]))
    return out


def remedies(results: dict) -> List[Tuple[str, str, List[Sentence]]]:
    """(title, code, the sentences saying which scenario ran the pattern and what it did)."""
    from compare.scenarios import KERAS_IDS

    keras = ran(results, KERAS_IDS)
    recompiled = per_engine(results, "freeze.flip_and_recompile", "", "combined.train_on_batch (2)", keras)
    tape_engines = [e for e in keras if e in ("keras-tensorflow", "tf-keras")]
    steps = []
    for label, who in (("optimizer_D.apply_gradients", "D's optimizer"), ("optimizer_G.apply_gradients",
                                                                          "G's optimizer")):
        outcome = per_engine(results, "detach.reuse_with_detach", "", label, tape_engines)
        if outcome:
            steps.append(grouped_sentence(f"detach.reuse_with_detach ran this step; {who}", "detach.reuse_with_detach",
                                          "", outcome))
    for engine in (e for e in keras if e not in tape_engines):
        for label in ("optimizer_D.apply", "optimizer_G.apply"):
            for words, _ in per_engine(results, "detach.reuse_with_detach", "", label, [engine]).values():
                steps.append(Sentence(f"On {ENGINE_NAMES[engine]} the same step, written with that backend's "
                                      f"gradient call (its code is in the report), ran too: {label} {words}.",
                                      [record_ev("detach.reuse_with_detach", engine, "", label)]))
    return [
        ("Keep the recipe, set D.trainable before each call", TOGGLE,
         toggle_sentences(results) + not_run(results, KERAS_IDS, "this remedy")),
        ("Or compile the combined model again after changing D.trainable", RECOMPILE,
         ([grouped_sentence("freeze.flip_and_recompile ran this pattern (D.trainable = False, then compile again); "
                            "the next combined call", "freeze.flip_and_recompile", "", recompiled)]
          if recompiled else []) + not_run(results, KERAS_IDS, "this remedy")),
        ("Or write the step yourself: a GradientTape and one optimizer per model (TensorFlow, Keras 2)", TAPE_STEP,
         steps + not_run(results, KERAS_IDS, "this remedy")),
    ]


# --- idioms --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Idiom:
    goal: str
    torch: str
    keras3: str
    keras2: str
    scenarios: Sequence[str]
    # steps of the first scenario whose outcome each variant states: (Keras label, PyTorch label)
    steps: Sequence[Tuple[str, str]] = ()


IDIOMS = [
    Idiom("Step G only in the G step", "`optimizer_G.step()`, the optimizer built on `G.parameters()`",
          "`optimizer_G.apply(grads, G.trainable_variables)` in a custom step",
          "`optimizer_G.apply_gradients(zip(grads, G.trainable_weights))`", ["scope.g_step"]),
    Idiom("Keep the D step's gradient out of G", "`D(fake.detach())`",
          "`D(keras.ops.stop_gradient(fake))`, or differentiate with respect to D's variables only",
          "`D(tf.stop_gradient(fake))`", ["detach.reuse_with_detach", "detach.keras_stop_gradient"]),
    Idiom("Freeze D while G trains", "`D.requires_grad_(False)`", "`D.trainable = False`",
          "`D.trainable = False` before compiling the combined model",
          ["scope.requires_grad_off", "freeze.frozen_bn_mode", "freeze.classic_recipe"]),
    Idiom("Clear gradients", "`optimizer.zero_grad()`", "pass `None` or zeros as the gradient",
          "pass `None` or zeros as the gradient", ["scope.zero_grad_then_step"],
          steps=[("step after clearing", "step after clearing")]),
    Idiom("Train G through D", "`loss(D(G(z)), ones).backward(); optimizer_G.step()`",
          "`combined = keras.Sequential([G, D])`, compiled, `combined.train_on_batch(z, ones)`",
          "the same", ["freeze.combined_no_freeze", "freeze.classic_recipe"]),
    Idiom("Change what is frozen between calls", "`requires_grad_` any time",
          "set `trainable`, then compile again", "set `trainable`, then compile again",
          ["freeze.flip_after_compile", "freeze.flip_after_first_call", "freeze.flip_and_recompile",
           "freeze.toggle_every_call"]),
    Idiom("One optimizer per model", "`Adam(G.parameters())`, `Adam(D.parameters())`",
          "one optimizer instance per compiled model", "the same", ["freeze.shared_optimizer"],
          steps=[("iteration 1: combined.train_on_batch", "iteration 1: combined step"),
                 ("iteration 1: D.train_on_batch (real)", "iteration 1: D step (real)")]),
    Idiom("Backward twice through one forward", "`loss.backward(retain_graph=True)`",
          "`tf.GradientTape(persistent=True)` on TensorFlow; `jax.vjp` keeps the forward on JAX",
          "`tf.GradientTape(persistent=True)`", ["detach.retain_graph", "detach.tape_twice"]),
]


def idiom_evidence(results: dict, idiom: Idiom) -> List[Sentence]:
    """Per scenario of the idiom, per variant: whose parameters moved on each engine that ran."""
    from compare.scenarios import ENGINE_IDS, catalog

    out = []
    engines = ran(results, ENGINE_IDS)
    for scenario_id in idiom.scenarios:
        scenario = catalog().get(scenario_id)
        for variant in scenario.variants if scenario else ():
            seen = {e: r for e in engines if (r := find_record(results, scenario_id, e, INIT, variant))
                    and r["status"] in ("ok", "raised")}
            if not seen:
                continue
            groups: Dict[str, List[str]] = {}
            for engine, record in seen.items():
                groups.setdefault(moved_cell(record), []).append(engine)
            text = "; ".join(f"{cell}: {', '.join(es)}" for cell, es in groups.items())
            label = scenario_id + (f" [{variant}]" if variant else "")
            out.append(Sentence(f"{label}: {text}", [record_ev(scenario_id, e, variant) for e in seen]))
            if scenario_id != idiom.scenarios[0]:
                continue
            for keras_step, torch_step in idiom.steps:
                outcome = per_engine(results, scenario_id, variant,
                                     lambda e: keras_label(e, keras_step, torch_step), list(seen))
                if outcome:
                    out.append(grouped_sentence(f"{label}, step \"{keras_step}\" (PyTorch: \"{torch_step}\"):",
                                                scenario_id, variant, outcome))
            if idiom.steps:
                out += warned(results, scenario_id, variant, list(seen))
    return out


def warned(results: dict, scenario_id: str, variant: str, engines: Sequence[str]) -> List[Sentence]:
    """The warnings a scenario recorded, per engine."""
    groups: Dict[str, List[str]] = {}
    for engine in engines:
        text = (find_record(results, scenario_id, engine, INIT, variant) or {}).get("values", {}).get("warnings")
        if text:
            groups.setdefault(text[:300], []).append(engine)
    return [Sentence(f"{join_names(es)} warned: \"{text}\".", [record_ev(scenario_id, e, variant, values=("warnings",))
                                                              for e in es]) for text, es in groups.items()]


# --- traps ---------------------------------------------------------------------------------

def call_by_call(record: dict) -> str:
    """'combined.train_on_batch: G; D.train_on_batch: nothing' - whose parameters each call moved."""
    parts = []
    for step in record["steps"]:
        moved = "+".join(net for net in ("G", "D") if step["changed"][net]["params"]) or "nothing"
        if "error" in step:
            moved += f" (raised {step['error']['type']})"
        parts.append(f"{step['label']}: {moved}")
    return "; ".join(parts)


def differing(results: dict, scenario, engines: Sequence[str], describe) -> Optional[tuple]:
    """(variant, {engine: description}) for the first variant where these engines' outcomes
    from the constant initialisation, as ``describe`` puts them, differ."""
    for variant in scenario.variants:
        seen = {}
        for engine in engines:
            record = find_record(results, scenario.id, engine, INIT, variant)
            if record is not None and record["status"] in ("ok", "raised"):
                seen[engine] = describe(record)
        if len(seen) > 1 and len(set(seen.values())) > 1:
            return variant, seen
    return None


def keras_traps(results: dict) -> List[Sentence]:
    from compare.scenarios import KERAS_IDS, catalog

    keras = ran(results, KERAS_IDS)
    out = not_run(results, KERAS_IDS, "this comparison")
    if len(keras) < 2:
        return out + [Sentence(f"Fewer than two Keras engines ran ({join_names(keras) if keras else 'none'}), so "
                               "no Keras code was compared across versions and backends.",
                               [Evidence("engine", e, absent=e not in results["engines"]) for e in KERAS_IDS])]
    found = False
    for scenario in catalog().values():
        by_function: Dict[object, List[str]] = {}
        for engine in keras:
            if engine in scenario.implementations:
                by_function.setdefault(scenario.implementations[engine], []).append(engine)
        for engines in by_function.values():
            case = differing(results, scenario, engines, call_by_call)
            if case:
                found = True
                variant, seen = case
                label = scenario.id + (f" [{variant}]" if variant else "")
                text = "; ".join(f"{ENGINE_NAMES[e]}: {t}" for e, t in seen.items())
                out.append(Sentence(f"**{label}**: {text}.", [record_ev(scenario.id, e, variant) for e in seen]))
    if not found:
        out.append(Sentence(f"{join_names(keras)} ran the same Keras code and agreed on every scenario.",
                            [Evidence("engine", e) for e in keras]))
    return out


def torch_traps(results: dict) -> List[Sentence]:
    from compare.scenarios import KERAS_IDS, catalog

    keras = ran(results, KERAS_IDS)
    out = not_run(results, ("torch",) + KERAS_IDS, "this comparison")
    if not keras or engine_state(results, "torch") is not None:
        return out + [Sentence("PyTorch and at least one Keras engine must run for this comparison; they did not.",
                               [Evidence("engine", e, absent=e not in results["engines"])
                                for e in ("torch",) + KERAS_IDS])]
    for scenario in catalog().values():
        case = differing(results, scenario, ["torch"] + keras, moved_cell)
        if case and "torch" in case[1]:
            variant, seen = case
            label = scenario.id + (f" [{variant}]" if variant else "")
            text = "; ".join(f"{ENGINE_NAMES[e]}: {v}" for e, v in seen.items())
            out.append(Sentence(f"**{label}**: {text}.", [record_ev(scenario.id, e, variant) for e in seen]))
    return out


def claim_traps(results: dict) -> List[Sentence]:
    from compare.scenarios import ENGINE_IDS, catalog

    out = not_run(results, ENGINE_IDS, "this list")
    engines = ran(results, ENGINE_IDS)
    for scenario in catalog().values():
        for claim in scenario.claims:
            verdicts = {e: claim_verdicts(results, scenario, e, claim.id) for e in engines}
            verdicts = {e: v for e, v in verdicts.items() if v != "n/a"}
            if any(v != "holds" for v in verdicts.values()):
                evidence = [record_ev(scenario.id, r["engine"], r["variant"]) for r in results["results"]
                            if r["scenario"] == scenario.id and r["engine"] in verdicts and r["init"] == INIT
                            and any(c["claim"] == claim.id and c["verdict"] != "not-applicable"
                                    for c in r.get("claims", []))]
                text = "; ".join(f"{ENGINE_NAMES[e]}: {v}" for e, v in verdicts.items())
                out.append(Sentence(f"{scenario.id}, from {claim.source}: \"{claim.text}\" {text}.", evidence))
    return out


def numeric_traps(results: dict) -> List[Sentence]:
    from compare.scenarios import ENGINE_IDS

    out = not_run(results, ENGINE_IDS, "this list")
    estimators: Dict[str, List[Tuple[str, str]]] = {}
    for engine, info in results["engines"].items():
        for dtype, run in info["runs"].items():
            if run["status"] != "ok":
                continue
            text = f"keeps the {run['bn_estimator']['estimator']} batch variance"
            if dtype == "float64" and run["bn_estimator"]["on_float32_grid"]:
                text += ", computing in float32 although float64 was asked for"
            estimators.setdefault(text, []).append((engine, dtype))
    for text, where in estimators.items():
        out.append(Sentence(f"BatchNorm {text}: {', '.join(f'{ENGINE_NAMES[e]} {d}' for e, d in where)}.",
                            [Evidence("run", e, name="bn_estimator", dtype=d) for e, d in where]))
    for name in dict.fromkeys(p["pitfall"] for p in results["pitfalls"]):
        effects = [p for p in results["pitfalls"] if p["pitfall"] == name]
        # what was set, without the description's reason: the run measures the effect, not the cause
        what = effects[0]["description"].split(", which ")[0]
        for dtype in dict.fromkeys(p["dtype"] for p in effects):
            beyond = [p for p in effects if p["dtype"] == dtype and not p["holds"]]
            if not beyond:
                continue
            within = [p["engine"] for p in effects if p["dtype"] == dtype and p["holds"]]
            text = (f"{what} (pitfall {name}), {dtype}: beyond the tolerance on "
                    + "; ".join(f"{ENGINE_NAMES[p['engine']]} {p['max_abs_diff']:.1e} ({p['worst_stage']})"
                                for p in beyond)
                    + (f"; within it on {join_names(within)}" if within else "") + ".")
            out.append(Sentence(text, [Evidence("pitfall", p["engine"], name=name, dtype=dtype)
                                       for p in effects if p["dtype"] == dtype]))
    out += probe_sentences(results)
    return out


def probe_sentences(results: dict) -> List[Sentence]:
    """What each engine's precision probes measured, for the constants they cover."""
    groups: Dict[Tuple[str, str], List[Tuple[str, str]]] = {}
    for engine, info in results["engines"].items():
        for dtype, run in info["runs"].items():
            for probe, value in (run.get("precision_probes") or {}).items() if run["status"] == "ok" else ():
                if isinstance(value, float) and "cast(" in probe:
                    verdict = "exactly 0" if value == 0 else f"{value:.1e}"
                    groups.setdefault((probe, verdict), []).append((engine, dtype))
    out = []
    for (probe, verdict), where in groups.items():
        out.append(Sentence(f"`{probe}` is {verdict} on {', '.join(f'{ENGINE_NAMES[e]} {d}' for e, d in where)}.",
                            [Evidence("run", e, name="precision_probes", dtype=d, item=probe) for e, d in where]))
    if out:
        probed = sorted({probe for probe, _ in groups})
        out.append(Sentence("These probes are the only constants measured one by one in this run ("
                            + ", ".join(f"`{p}`" for p in probed) + "): for the other constants a pitfall above "
                            "sets, the run measures their joint effect, not which of them is inexact.",
                            [ev for s in out for ev in s.evidence]))
    return out


# --- the guide -----------------------------------------------------------------------------

def sections(results: dict) -> List[Tuple[str, list]]:
    """(heading, content) in order; content mixes Sentences (bullets), plain lines and
    ("code", text) blocks; headings of level 3 start with '### '."""
    from compare.scenarios import ENGINE_IDS

    engines_ran = [Sentence(f"{ENGINE_NAMES[e]} ran.", [Evidence("engine", e)]) for e in ran(results, ENGINE_IDS)]
    engines_ran += not_run(results, ENGINE_IDS, "this guide")
    out = [("## Engines in this run", engines_ran),
           ("## The biggest finding: D.trainable = False and D's own train_on_batch", finding(results)),
           ("## What to write instead", ["Code a user writes; below each, the scenario that ran the same "
                                         "pattern and what it did."])]
    for title, code, said in remedies(results):
        out.append((f"### {title}", [("code", code)] + said))
    out.append(("## Idioms", ["The Keras counterpart of each PyTorch idiom, and, for each scenario that runs it, "
                              "whose parameters moved (whose state alone moved in brackets) on each engine, from "
                              "the constant initialisation."]))
    for idiom in IDIOMS:
        out.append((f"### {idiom.goal}", [f"PyTorch: {idiom.torch}. Keras 3: {idiom.keras3}. Keras 2: {idiom.keras2}."]
                    + idiom_evidence(results, idiom)))
    out += [("## Traps: the same idiom, different behaviour", []),
            ("### The same Keras code on Keras 2, Keras 3 and its backends",
             ["Scenarios where one Keras implementation ran on several engines and the engines disagreed; call by "
              "call, whose parameters moved."] + keras_traps(results)),
            ("### PyTorch against Keras", ["Scenarios where the PyTorch idiom and its Keras counterparts end "
                                           "differently (whose parameters moved; whose state alone moved in "
                                           "brackets)."] + torch_traps(results)),
            ("### Claims that do not hold everywhere", claim_traps(results)),
            ("## Numerical traps", ["Measured in the parity runs: what keeps two correct ports from agreeing to "
                                    "the last digit."] + numeric_traps(results))]
    if results.get("matrix"):
        from compare.matrix_view import guide_items

        out.append(("## Across versions", [
            "The same scenarios and parity stages in the committed version matrix, each point compared with the one "
            "before it."] + [Sentence(text, [Evidence("matrix", on.get("engine", ""), scenario=on.get("subject", ""),
                                                         name=on.get("pair") or on.get("point") or on.get("line"))])
                             for text, on in guide_items(results["matrix"])]))
    return out


def guide_evidence(results: dict) -> List[Tuple[str, List[dict]]]:
    """Every sentence of the guide with the evidence it cites, as results.json keys."""
    return [(item.text, [ev.key() for ev in item.evidence])
            for _, content in sections(results) for item in content if isinstance(item, Sentence)]


def render_guide(results: dict, report_link: str = "REPORT.md") -> str:
    """The guide as Markdown; ``report_link`` is the report's path relative to the guide."""
    packages = ", ".join(f"{k} {v}" for k, v in results["environment"]["packages"].items() if v)
    parts = ["# Migrating GAN training code between PyTorch, Keras 3 and Keras 2", "",
             f"Generated from the run of {results['generated']} ({packages}). Every sentence says what the engines "
             f"did in that run and links to its evidence in [the report]({report_link}): the scenario, the "
             "initialisation, the variant and the step.", ""]
    for heading, content in sections(results):
        parts += [heading, ""]
        for item in content:
            if isinstance(item, Sentence):
                parts += render_sentences([item], report_link)
            elif isinstance(item, tuple):
                parts += ["", "```python", item[1], "```", ""]
            else:
                parts += [item, ""]
        parts.append("")
    return "\n".join(parts).replace("\n\n\n", "\n\n").rstrip() + "\n"


STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace;background:#f4f4f4}pre{padding:.6rem;overflow-x:auto}
h2{border-bottom:1px solid #ddd;margin-top:2rem}li{margin:.3rem 0}a{color:#0550ae}"""


def render_guide_html(results: dict, report_link: str = "report.html") -> str:
    """The guide as one self-contained HTML page; ``report_link`` is the HTML report's path."""
    import markdown

    body = markdown.markdown(render_guide(results, report_link), extensions=["fenced_code", "tables"])
    title = "Migrating GAN training code between PyTorch, Keras 3 and Keras 2"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
