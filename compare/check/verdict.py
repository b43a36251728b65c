"""A Keras side against the reference, tensor by tensor, in the order a divergence spreads:
the first tensor out of tolerance is where the port first goes wrong. Runs in the parent.

Tolerances are the report's (``compare.parity``). Two named rules apply, each only where its
evidence was measured: ``keras-float64-to-float32`` (the engine computes float64 in float32:
held to the float32 tolerance) and ``bn-variance-estimator`` (PyTorch keeps the unbiased
batch variance, Keras the biased one: the reference's batch variances, replayed through
both estimators, predict the difference; what is left must be within tolerance).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from compare.check.stages import QUANTITY_ORDER, stages
from compare.parity import TOLERANCE, max_abs_diff, precision_rule, replay_moving_variance
from compare.port import TensorSpec

NOT_ALWAYS_THERE = ("output", "optimizer")  # a subclassed model's layers, an optimizer's moments


def engine_tolerance(dtype: str, facts: dict):
    """(tolerance, rule): the float32 tolerance where the float64 rule's evidence was measured."""
    rule = precision_rule(dtype, facts)
    return (TOLERANCE["float32"] if rule else TOLERANCE[dtype]), rule


def ordered_keys(stage: str, quantity: str, keys: List[str], specs: Dict[str, TensorSpec],
                 layers: List[str]) -> List[str]:
    """A stage's keys of one quantity in the order a divergence spreads: layers in execution
    order and then the net's output; gradients from the loss backwards, D's (its loss comes
    first) before G's; losses iteration by iteration; tensors in spec order."""
    names = [k.split("/", 2)[2] for k in keys]
    spec_order = {name: i for i, name in enumerate(specs)}
    if quantity == "output":
        rank = {name: i for i, name in enumerate(layers)}
        names.sort(key=lambda n: rank.get(n, len(rank)))
    elif quantity == "gradient":
        names.sort(key=lambda n: (n.split(".")[0] != "D", -spec_order.get(n, 0)))
    elif quantity == "loss":
        names.sort(key=lambda n: (int(n.rsplit(".", 1)[1]) if "." in n else 0, ("D_real", "D_fake", "G").index(
            n.split(".")[0]) if n.split(".")[0] in ("D_real", "D_fake", "G") else 3, n))
    else:
        names.sort(key=lambda n: spec_order.get(n.rsplit(".", 1)[0] if quantity == "optimizer" else n, 0))
    return [f"{stage}/{quantity}/{n}" for n in names]


def where(stage: str, quantity: str, name: str, specs: Dict[str, TensorSpec], keras_layers: Dict[str, str],
          iterations: int) -> dict:
    """Stage, iteration, net, layer (torch path and Keras name) and tensor of one key."""
    iteration = int(stage.split(".")[1]) if stage.startswith("iteration.") else None
    net, layer = None, None
    if quantity == "loss":
        net = "G" if name.split(".")[0] == "G" else "D"
        if "." in name:
            iteration = int(name.rsplit(".", 1)[1])
    elif quantity == "output":
        net, _, layer = name.partition(".")
        layer = layer or None
    else:
        spec = specs.get(name.rsplit(".", 1)[0] if quantity == "optimizer" else name)
        if spec is not None:
            net, layer = spec.net, spec.layer
    keras_layer = keras_layers.get(f"{net}.{layer}") if layer is not None else None
    return {"stage": stage, "iteration": iteration, "net": net, "layer": layer, "keras_layer": keras_layer,
            "quantity": quantity, "tensor": name}


def variance_residual(stage: str, name: str, spec: TensorSpec, measured: np.ndarray, reference: np.ndarray,
                      ref_arrays, ref_facts: dict, facts: dict, weights) -> Optional[float]:
    """Where the two sides keep different variance estimators: how far the measured difference
    is from the one the bn-variance-estimator rule predicts, with each side following
    PyTorch's momentum (a mismatched momentum is left unexplained). None where the
    estimators agree or the layer's settings are unknown."""
    # measured per input rank: Keras 2 keeps one variance for images and another for 2-D batches
    flat = spec.layer_type == "BatchNorm1d"
    ref_estimator = ref_facts["bn_estimator_2d"] if flat else ref_facts["bn_estimator"]["estimator"]
    estimator = facts["bn_estimator_2d"] if flat else facts["bn_estimator"]["estimator"]
    bn = ref_facts["bn"].get(f"{spec.net}.{spec.layer}")
    if ref_estimator == estimator or not bn or bn["momentum"] is None or not bn["n"]:
        return None
    key = f"{stage}/batchvar/{spec.net}.{spec.layer}"
    batch_variances = ref_arrays[key] if key in ref_arrays.files else []
    factors = {"unbiased": bn["n"] / (bn["n"] - 1), "biased": 1.0}
    initial = weights[name]
    predicted = (replay_moving_variance(initial, bn["momentum"], factors[ref_estimator], batch_variances)
                 - replay_moving_variance(initial, bn["momentum"], factors[estimator], batch_variances))
    return max_abs_diff(reference - measured, predicted)


def compare_side(dtype: str, iterations: int, ref_facts: dict, ref_arrays, facts: dict, arrays, weights) -> dict:
    """Every record, the per-stage summary, the first divergence and the verdict of one engine."""
    tolerance, rule = engine_tolerance(dtype, facts)
    specs = {s["name"]: TensorSpec.from_json(s) for net in ("G", "D") for s in ref_facts["specs"][net]}
    layers = [f"{net}.{s['layer']}" for net in ("G", "D") for s in ref_facts["specs"][net]]
    layers = list(dict.fromkeys(layers)) + ["G", "D"]
    keys = set(arrays.files)
    records: List[dict] = []
    not_compared: List[str] = []
    for stage in stages(iterations):
        for quantity in QUANTITY_ORDER:
            prefix = f"{stage}/{quantity}/"
            found = [k for k in ref_arrays.files if k.startswith(prefix)]
            for key in ordered_keys(stage, quantity, found, specs, layers):
                name = key[len(prefix):]
                if key not in keys:
                    if quantity in NOT_ALWAYS_THERE:
                        not_compared.append(key)
                        continue
                    diff, judged, applied = float("inf"), float("inf"), None
                else:
                    diff = max_abs_diff(ref_arrays[key], arrays[key])
                    judged, applied = diff, None
                    spec = specs.get(name)
                    if quantity == "state" and spec is not None and spec.role == "moving_variance":
                        residual = variance_residual(stage, name, spec, arrays[key], ref_arrays[key], ref_arrays,
                                                     ref_facts, facts, weights)
                        if residual is not None and diff > tolerance:  # named only where it was needed
                            judged, applied = residual, "bn-variance-estimator"
                bound = 0.0 if stage == "structure" else tolerance
                records.append({**where(stage, quantity, name, specs, facts.get("keras_layers", {}), iterations),
                                "max_abs_diff": diff, "judged_diff": judged, "tolerance": bound,
                                "rule": ", ".join(filter(None, [rule if stage != "structure" else None, applied]))
                                or None, "holds": bool(judged <= bound)})
    first = next((r for r in records if not r["holds"]), None)
    summary = []
    for stage in stages(iterations):
        rows = [r for r in records if r["stage"] == stage]
        if rows:
            worst = max(rows, key=lambda r: r["judged_diff"])
            summary.append({"stage": stage, "max_abs_diff": max(r["max_abs_diff"] for r in rows),
                            "judged_diff": worst["judged_diff"], "worst": worst["tensor"],
                            "tolerance": rows[0]["tolerance"], "holds": all(r["holds"] for r in rows),
                            "rules": sorted({x.strip() for r in rows if r["rule"] for x in r["rule"].split(",")})})
    fields = ("stage", "iteration", "net", "layer", "keras_layer", "tensor", "quantity", "max_abs_diff", "tolerance")
    return {"verdict": "FAIL" if first else "PASS", "tolerance": tolerance, "rule": rule,
            "first_divergence": {k: first[k] for k in fields} if first else None,
            "stages": summary, "records": records, "not_compared": not_compared}


def residual_at(result: dict, divergence: dict) -> float:
    """In a re-run: the largest judged difference left where the original run first diverged
    (the same stage, quantity and tensor). Where the re-run has no such tensor (a switch
    that removes a bias), every tensor of that stage and quantity stands in for it."""
    here = [r for r in result["records"] if r["stage"] == divergence["stage"] and r["quantity"] == divergence["quantity"]]
    same = [r["judged_diff"] for r in here if r["tensor"] == divergence["tensor"]] or [r["judged_diff"] for r in here]
    return max(same) if same else float("inf")
