"""Compare every engine's staged run against the reference (torch), tensor by tensor.

Runs in the parent, on the arrays the children wrote. A record per (engine, dtype,
config, stage, quantity) says the largest absolute difference, the tolerance and
whether it holds. Where a named framework rule explains a difference, the record
carries the rule and the residual left after the rule's prediction, and holds only
if that residual is within tolerance. NaN or inf never count as agreement.
"""

from __future__ import annotations

import functools
from typing import Dict, Iterable, List, Optional

import numpy as np

from compare.engines import ENGINES, REFERENCE
from compare.models.toy import PARITY, PITFALLS, Config, bn_layers, bn_settings, initial_weights
from compare.program import STAGES, configs

QUANTITIES = ("output", "loss", "gradient", "param", "state")

# float64: the bar the engines must clear. float32 (and engines that compute in float32
# whatever dtype was asked for): a float32 value carries a relative rounding error of
# 2**-24 (6e-8) per operation, and one output of these nets sums up to 576 products
# (fan-in of G's 3x3 conv over 64 channels), so rounding alone can reach 576 * 6e-8,
# about 3.4e-5 relative, in the worst case. 1e-5 absolute sits above every float32
# disagreement measured here (see the report) and far below the smallest semantic
# effect the pitfall runs measure.
TOLERANCE = {"float64": 1e-9, "float32": 1e-5}

RULES = {
    "bn-variance-estimator": (
        "PyTorch's BatchNorm keeps the unbiased batch variance (divided by n - 1) in running_var; "
        "Keras keeps the biased one (divided by n). Both normalise with the biased one. Replaying "
        "the batch variances PyTorch saw through each engine's own estimator predicts both "
        "moving variances; the residual is what the rule leaves unexplained."
    ),
    "keras-float64-to-float32": (
        "Keras 3's type promotion turns float64 into float32 on the JAX and PyTorch backends "
        "(keras.backend.result_type('float64', 'float32') == 'float32'; the TensorFlow backend "
        "keeps float64), and BatchNormalization computes in result_type(inputs, 'float32'): with "
        "floatx float64 it still normalises in float32 (on JAX, keras.ops.tanh does too). The "
        "engine is held to the float32 tolerance."
    ),
}


PROMOTION_PROBE = "keras.backend.result_type('float64', 'float32')"


def precision_rule(dtype: str, facts: dict) -> Optional[str]:
    """The rule that caps this engine's precision below ``dtype``: applied only where both
    the symptom (a float64 BN whose moving variance lies on the float32 grid) and the
    op-level cause (Keras promoting float64 to float32) were measured. A loss of
    precision without that evidence is not excused: it fails the float64 tolerance."""
    if dtype != "float64":
        return None
    symptom = facts["bn_estimator"]["on_float32_grid"]
    cause = facts.get("precision_probes", {}).get(PROMOTION_PROBE) == "float32"
    return "keras-float64-to-float32" if symptom and cause else None


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b|; inf when shapes differ or either side is not finite."""
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


@functools.lru_cache(maxsize=None)
def initial_moving_variance(config: Config, layer: str) -> np.ndarray:
    """Made once per config: the parity comparison asks for it per record."""
    return initial_weights(config)[f"{layer}.moving_variance"]


def predicted_moving_variance(config: Config, layer: str, framework: str, estimator: str,
                              batch_variances: np.ndarray) -> np.ndarray:
    """Replay the batch variances through one engine's BN update rule."""
    momentum, _ = bn_settings(config, framework)
    weight_new = momentum if framework == "torch" else 1 - momentum  # Keras counts the other way
    n = bn_layers()[layer]
    factor = n / (n - 1) if estimator == "unbiased" else 1.0
    return replay_moving_variance(initial_moving_variance(config, layer), weight_new, factor, batch_variances)


def replay_moving_variance(initial: np.ndarray, weight_new: float, factor: float,
                           batch_variances) -> np.ndarray:
    """A moving variance after a BN layer saw ``batch_variances`` (biased), each weighted by
    ``weight_new`` and scaled by ``factor`` (n / (n - 1) for the unbiased estimator)."""
    value = initial
    for batch_variance in batch_variances:
        value = (1 - weight_new) * value + weight_new * factor * batch_variance
    return value


def compare_engine(engine: str, dtype: str, facts: dict, arrays, ref_facts: dict, ref_arrays,
                   framework: str) -> List[dict]:
    records = []
    ref_framework = ENGINES[REFERENCE].framework
    tolerance_rule = precision_rule(dtype, facts)
    tolerance = TOLERANCE["float32"] if tolerance_rule else TOLERANCE[dtype]
    keys = set(arrays.files)
    for config in configs():
        c = config.name
        ref_structure = ref_facts["configs"][c]["structure"]
        structure = facts["configs"][c]["structure"]
        same_params = ref_structure["params"] == structure["params"]
        shared_state = {k: v for k, v in ref_structure["state"].items() if k in structure["state"]}
        same_state = shared_state == structure["state"]
        port = float(arrays[f"{c}/structure/param/port"][0])
        records.append({
            "engine": engine, "reference": REFERENCE, "dtype": dtype, "config": c, "stage": "structure",
            "quantity": "names and shapes", "max_abs_diff": port if same_params and same_state else float("inf"),
            "worst": None if same_params and same_state else "names or shapes differ",
            "tolerance": 0.0, "holds": same_params and same_state and port == 0.0, "rule": None,
            "residual_after_rule": None, "judged_diff": port if same_params and same_state else float("inf"),
            "reference_only": sorted(set(ref_structure["state"]) - set(structure["state"])),
        })
        for stage in STAGES[1:]:
            for quantity in QUANTITIES:
                prefix = f"{c}/{stage}/{quantity}/"
                names = sorted(k for k in ref_arrays.files if k.startswith(prefix))
                if not names:
                    continue
                worst, worst_name, judged, residual, rule = 0.0, None, 0.0, None, tolerance_rule
                only_ref = []
                for key in names:
                    name = key[len(prefix):]
                    if key not in keys:
                        only_ref.append(name)  # e.g. PyTorch's num_batches_tracked: no counterpart
                        continue
                    diff = max_abs_diff(ref_arrays[key], arrays[key])
                    if diff >= worst:
                        worst, worst_name = diff, name
                    explained = None
                    if name.endswith(".moving_variance"):
                        explained = variance_rule_residual(config, stage, name, facts, ref_facts, arrays[key],
                                                           ref_arrays, key, framework, ref_framework)
                    if explained is not None:
                        rule = ", ".join(filter(None, [tolerance_rule, "bn-variance-estimator"]))
                        residual = max(residual or 0.0, explained)
                    judged = max(judged, diff if explained is None else explained)
                records.append({
                    "engine": engine, "reference": REFERENCE, "dtype": dtype, "config": c, "stage": stage,
                    "quantity": quantity, "max_abs_diff": worst, "worst": worst_name, "tolerance": tolerance,
                    "holds": bool(judged <= tolerance), "rule": rule,
                    "residual_after_rule": residual, "judged_diff": judged, "reference_only": only_ref,
                })
    return records


def variance_rule_residual(config: Config, stage: str, name: str, facts: dict, ref_facts: dict,
                           value: np.ndarray, ref_arrays, key: str, framework: str,
                           ref_framework: str) -> Optional[float]:
    """Where the two engines keep different variance estimators: how far the measured
    difference is from the one the rule predicts. None where the estimators agree."""
    estimator = facts["bn_estimator"]["estimator"]
    ref_estimator = ref_facts["bn_estimator"]["estimator"]
    if estimator == ref_estimator:
        return None
    layer = name.rsplit(".", 1)[0]
    batchvar_key = f"{config.name}/{stage}/batchvar/{layer}"
    # no key: the layer saw no training batch in this stage, so nothing was updated
    batch_variances = ref_arrays[batchvar_key] if batchvar_key in ref_arrays.files else []
    predicted = predicted_moving_variance(config, layer, framework, estimator, batch_variances)
    ref_predicted = predicted_moving_variance(config, layer, ref_framework, ref_estimator, batch_variances)
    measured_diff = ref_arrays[key] - value
    predicted_diff = ref_predicted - predicted
    return max_abs_diff(measured_diff, predicted_diff)


def compare_runs(runs: Dict) -> List[dict]:
    """Parity records for every engine run that has a reference run of the same dtype."""
    records: List[dict] = []
    for (engine, dtype), run in runs.items():
        if engine == REFERENCE or run.status != "ok":
            continue
        ref = runs.get((REFERENCE, dtype))
        if ref is None or ref.status != "ok":
            continue
        records += compare_engine(engine, dtype, run.facts, run.arrays(), ref.facts, ref.arrays(),
                                  ENGINES[engine].framework)
    return records


def summarise(records: Iterable[dict], config: str = PARITY.name) -> List[dict]:
    """One row per (engine, dtype, stage): the worst difference over its quantities."""
    rows: Dict[tuple, dict] = {}
    for r in records:
        if r["config"] != config:
            continue
        key = (r["engine"], r["dtype"], r["stage"])
        row = rows.setdefault(key, {"engine": r["engine"], "dtype": r["dtype"], "stage": r["stage"],
                                    "max_abs_diff": 0.0, "tolerance": r["tolerance"], "holds": True,
                                    "rules": set()})
        row["max_abs_diff"] = max(row["max_abs_diff"], r["max_abs_diff"])
        row["judged_diff"] = max(row.get("judged_diff", 0.0), r.get("judged_diff", r["max_abs_diff"]))
        row["holds"] = row["holds"] and r["holds"]
        if r["rule"]:
            row["rules"].update(x.strip() for x in r["rule"].split(","))
    return list(rows.values())


def pitfall_effects(records: Iterable[dict]) -> List[dict]:
    """For each pitfall config: the largest difference it causes, per engine and dtype."""
    out: Dict[tuple, dict] = {}
    for r in records:
        if r["config"] not in PITFALLS or r["stage"] == "structure":
            continue
        key = (r["config"], r["engine"], r["dtype"])
        row = out.setdefault(key, {"pitfall": r["config"], "description": PITFALLS[r["config"]][1],
                                   "engine": r["engine"], "dtype": r["dtype"], "max_abs_diff": 0.0,
                                   "worst_stage": None, "holds": True})
        if r["judged_diff"] >= row["max_abs_diff"]:  # after the named rules: the pitfall's own effect
            row["max_abs_diff"], row["worst_stage"] = r["judged_diff"], f"{r['stage']} {r['quantity']}"
        row["holds"] = row["holds"] and r["holds"]
    return list(out.values())
