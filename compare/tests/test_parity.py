"""Staged parity of every Keras engine with PyTorch, each engine, dtype and stage a test."""

from __future__ import annotations

import numpy as np
import pytest

from compare import parity
from compare.models.toy import PARITY, PITFALLS
from compare.engines import ENGINES, REFERENCE
from compare.program import STAGES, configs
from compare.tests.plugin import DTYPES, KERAS_ENGINES, require_run


def records_for(records, engine, dtype, config=PARITY.name, stage=None):
    return [r for r in records if r["engine"] == engine and r["dtype"] == dtype and r["config"] == config
            and (stage is None or r["stage"] == stage)]


def describe(failing):
    return "; ".join(f"{r['stage']} {r['quantity']}: {r['worst']} differs by {r['max_abs_diff']:.3g} "
                     f"(judged {r['judged_diff']:.3g}, tolerance {r['tolerance']:.1g}, rule {r['rule']})"
                     for r in failing)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", KERAS_ENGINES)
def test_stage_matches_torch(engine_runs, parity_records, engine, dtype, stage):
    require_run(engine_runs, engine, dtype)
    records = records_for(parity_records, engine, dtype, stage=stage)
    assert records, f"no parity record for {engine} {dtype} {stage}"
    failing = [r for r in records if not r["holds"]]
    assert not failing, describe(failing)


@pytest.mark.dtypes("float64")
@pytest.mark.parametrize("engine", KERAS_ENGINES)
def test_float64_trainable_parameters_within_1e9(engine_runs, parity_records, engine):
    """After one and after ten canonical iterations, every trainable parameter agrees with
    torch within 1e-9, unless the engine carries the measured float64->float32 rule."""
    run = require_run(engine_runs, engine, "float64")
    rule = parity.precision_rule("float64", run.facts)
    for stage in ("iteration.1", "iteration.10"):
        (record,) = [r for r in records_for(parity_records, engine, "float64", stage=stage)
                     if r["quantity"] == "param"]
        if rule is None:
            assert record["max_abs_diff"] <= 1e-9, describe([record])
        else:
            assert record["max_abs_diff"] <= parity.TOLERANCE["float32"], describe([record])


@pytest.mark.dtypes("float64")
@pytest.mark.parametrize("engine", KERAS_ENGINES)
def test_float64_state_is_equal_or_explained_by_the_variance_rule(engine_runs, parity_records, engine):
    """Every state tensor agrees within tolerance, or its difference equals what the BN
    variance-estimator rule predicts within tolerance (1e-9 for a true float64 engine)."""
    run = require_run(engine_runs, engine, "float64")
    tolerance = parity.TOLERANCE["float32"] if parity.precision_rule("float64", run.facts) else 1e-9
    for record in records_for(parity_records, engine, "float64"):
        if record["quantity"] != "state":
            continue
        if record["residual_after_rule"] is not None:
            assert record["residual_after_rule"] <= tolerance, describe([record])
        else:
            assert record["max_abs_diff"] <= tolerance, describe([record])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_weight_port_round_trip_is_exact(engine_runs, engine, dtype):
    """Loading the canonical weights and exporting them gives them back bit for bit (rounded
    to the dtype) in every engine, the reference included (no other engine is compared with it)."""
    run = require_run(engine_runs, engine, dtype)
    arrays = run.arrays()
    ports = {c.name: float(arrays[f"{c.name}/structure/param/port"][0]) for c in configs()}
    assert all(v == 0.0 for v in ports.values()), ports


def test_nan_and_inf_never_count_as_agreement():
    a = np.array([1.0, 2.0])
    assert parity.max_abs_diff(a, np.array([1.0, np.nan])) == float("inf")
    assert parity.max_abs_diff(np.array([np.inf, 2.0]), np.array([np.inf, 2.0])) == float("inf")
    assert parity.max_abs_diff(a, np.array([1.0, 2.0, 3.0])) == float("inf")
    assert parity.max_abs_diff(a, a.copy()) == 0.0


def test_variance_rule_predicts_a_known_case():
    """Two updates of D's 32-channel BN (batch variance 1, then 2), done by hand: torch keeps n/(n-1) times the batch variance."""
    from compare.models.toy import bn_layers

    n = bn_layers()["D.bn"]
    batch = np.array([[1.0] * 32, [2.0] * 32])
    torch_pred = parity.predicted_moving_variance(PARITY, "D.bn", "torch", "unbiased", batch)
    keras_pred = parity.predicted_moving_variance(PARITY, "D.bn", "keras", "biased", batch)
    from compare.models.toy import initial_weights

    r0 = initial_weights(PARITY)["D.bn.moving_variance"]
    m = PARITY.bn_momentum
    expected_torch = (1 - m) * ((1 - m) * r0 + m * n / (n - 1)) + m * 2 * n / (n - 1)
    expected_keras = (1 - m) * ((1 - m) * r0 + m) + m * 2
    np.testing.assert_allclose(torch_pred, expected_torch, rtol=0, atol=1e-15)
    np.testing.assert_allclose(keras_pred, expected_keras, rtol=0, atol=1e-15)


@pytest.mark.parametrize("pitfall", list(PITFALLS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_pitfall_effect_is_measured(engine_runs, parity_records, pitfall, dtype):
    """Every pitfall run produced a comparison for every Keras engine that ran."""
    effects = [p for p in parity.pitfall_effects(parity_records) if p["pitfall"] == pitfall and p["dtype"] == dtype]
    ran = [e for e in KERAS_ENGINES if engine_runs[(e, dtype)].status == "ok"
           and engine_runs[(REFERENCE, dtype)].status == "ok"]
    if not ran:
        pytest.skip("no Keras engine ran")
    assert sorted(p["engine"] for p in effects) == sorted(ran)
    assert all(np.isfinite(p["max_abs_diff"]) for p in effects)
