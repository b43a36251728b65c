"""Op-level facts behind the parity rules, each measured against numpy in the engine's process."""

from __future__ import annotations

import numpy as np
import pytest

from compare import parity
from compare.engines import ENGINES
from compare.tests.plugin import DTYPES, require_run


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_bn_keeps_one_identifiable_variance_estimator(engine_runs, engine, dtype):
    """The BN probe matches numpy's biased or unbiased variance to the dtype's rounding,
    and is far from the other: the estimator is measured, not assumed."""
    run = require_run(engine_runs, engine, dtype)
    probe = run.facts["bn_estimator"]
    close, far = sorted([probe["error_vs_biased"], probe["error_vs_unbiased"]])
    assert close <= 1e-5 and far >= 1e-2, probe


@pytest.mark.dtypes("float64")
@pytest.mark.parametrize("engine", list(ENGINES))
def test_float64_precision_is_lost_only_where_the_rule_names_the_cause(engine_runs, engine):
    """A float64 run whose BN moving variance lies on the float32 grid must show the named
    op-level cause (Keras promoting float64 to float32); a run without it matches numpy's
    float64 variance to float64 rounding."""
    run = require_run(engine_runs, engine, "float64")
    probe = run.facts["bn_estimator"]
    rule = parity.precision_rule("float64", run.facts)
    error = min(probe["error_vs_biased"], probe["error_vs_unbiased"])
    if rule:
        assert probe["on_float32_grid"] and error > 1e-12
        assert run.facts["precision_probes"][parity.PROMOTION_PROBE] == "float32"
    else:
        assert error <= 1e-12, f"float64 BN misses numpy by {error:.3g} and no rule names a cause"


@pytest.mark.dtypes("float64")
@pytest.mark.parametrize("engine", ["keras-tensorflow", "tf-keras"])
def test_tensorflow_casts_python_floats_through_float32(engine_runs, engine):
    """tf.cast(0.999, float64) equals numpy's float32(0.999), not 0.999: the reason the parity
    configuration uses Adam and BN constants that float32 represents exactly."""
    run = require_run(engine_runs, engine, "float64")
    ((name, value),) = [(k, v) for k, v in run.facts["precision_probes"].items() if "cast(0.999" in k]
    assert value == float(np.float32(0.999)) - 0.999, name


@pytest.mark.dtypes("float64")
@pytest.mark.parametrize("engine", ["keras-tensorflow", "tf-keras"])
def test_float32_rounded_adam_constants_break_float64_parity(engine_runs, parity_records, engine):
    """The cause removed by the parity configuration is the real one: restoring lr 1e-3 and
    betas 0.9/0.999 moves a true float64 TensorFlow engine beyond 1e-9 after ten iterations."""
    require_run(engine_runs, engine, "float64")
    effect = [p for p in parity.pitfall_effects(parity_records)
              if p["pitfall"] == "adam-constants-0.9-0.999" and p["engine"] == engine and p["dtype"] == "float64"]
    assert effect and effect[0]["max_abs_diff"] > 1e-9
