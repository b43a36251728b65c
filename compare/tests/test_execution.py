"""How each engine's parity iteration ran: recorded per config and stage in its facts."""

import pytest

from compare.engines import ENGINES
from compare.models.toy import PARITY
from compare.program import configs
from compare.tests.plugin import DTYPES, require_run


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_execution_is_recorded(engine_runs, engine, dtype):
    """Every config names the mode of its gradient call and its iterations; keras-jax
    compiles the long parity trajectory with jax.jit and nothing else."""
    execution = require_run(engine_runs, engine, dtype).facts["execution"]
    assert set(execution) == {c.name for c in configs()}
    for name, stages in execution.items():
        compiled = engine == "keras-jax" and name == PARITY.name
        assert stages == {"gradients": "eager", "iterations": "jax.jit" if compiled else "eager"}
