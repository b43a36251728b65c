"""How each engine's parity iteration ran: recorded per config and stage in its facts."""

import copy
import json

import pytest

from compare import report
from compare.engines import ENGINES
from compare.program import SCENARIO_DTYPE, configs
from compare.tests.locations import BASELINE
from compare.tests.plugin import DTYPES, require_run


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_execution_is_recorded(engine_runs, engine, dtype):
    """Every config names the mode of its gradient call and its iterations: the TensorFlow
    engines compile every config's iterations with tf.function, keras-jax every config's
    gradient call and iterations with jax.jit (one program per config); the rest run eagerly."""
    execution = require_run(engine_runs, engine, dtype).facts["execution"]
    assert set(execution) == {c.name for c in configs()}
    for name, stages in execution.items():
        if engine == "keras-jax":
            assert stages == {"gradients": "jax.jit", "iterations": "jax.jit"}
            continue
        iterations = "tf.function" if engine in ("keras-tensorflow", "tf-keras") else "eager"
        assert stages == {"gradients": "eager", "iterations": iterations}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_compilation_cache(engine_runs, engine, dtype):
    """keras-jax compiles each XLA program once per process: in float32 the freeze scenarios'
    fresh models of the same structure compile programs already compiled, and hit the cache."""
    cache = require_run(engine_runs, engine, dtype).facts["compilation_cache"]
    if engine != "keras-jax":
        assert cache is None
        return
    assert cache["misses"] > 0
    if dtype == SCENARIO_DTYPE:
        assert cache["hits"] > 0


def test_execution_phrase_names_each_mode_with_its_configs():
    execution = {"parity": {"gradients": "eager", "iterations": "jax.jit"},
                 "bn-defaults": {"gradients": "eager", "iterations": "eager"}}
    assert report.execution_phrase(execution) == "gradients: eager; iterations: jax.jit (parity), eager (bn-defaults)"


def test_init_notes_name_the_runs_whose_initialisations_differ():
    """From the shipped baseline: one pair made to differ is named, and counted."""
    with open(BASELINE, encoding="utf-8") as f:
        results = json.load(f)
    before = report.init_notes(results)[0]
    changed = copy.deepcopy(results)
    record = next(r for r in changed["results"] if r["scenario"] == "scope.g_step" and r["engine"] == "torch"
                  and r["init"] == "random")
    record["changed"]["D"]["params"] = record["changed"]["D"]["params"] + ["D.conv2.kernel"]
    after = report.init_notes(changed)[0]
    assert "scope.g_step on torch" in after and "scope.g_step" not in before
    count = lambda text: int(text.split("different observations in ")[1].split()[0])
    assert count(after) == count(before) + 1
