"""One run of every engine in both dtypes, shared by the whole session.

Engines run in child processes exactly as ``python -m compare report`` runs them; an
engine that is not installed makes its tests skip, with the install command as reason.
"""

from __future__ import annotations

import os

import pytest

from compare import parity
from compare.engines import ENGINES, REFERENCE
from compare.runner import run_engines

DTYPES = ("float32", "float64")
KERAS_ENGINES = [e for e in ENGINES if e != REFERENCE]


@pytest.fixture(scope="session")
def engine_runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("engines")
    return run_engines(list(ENGINES), list(DTYPES), str(workdir))


@pytest.fixture(scope="session")
def parity_records(engine_runs):
    return parity.compare_runs(engine_runs)


def require_run(engine_runs, engine: str, dtype: str):
    """The run, or a skip (not installed) or a failure (crashed, timed out) that says why."""
    for name in (REFERENCE, engine):
        run = engine_runs[(name, dtype)]
        if run.status == "unavailable":
            if os.environ.get("COMPARE_REQUIRE_ALL_ENGINES"):  # CI: a skipped engine is a defect
                pytest.fail(f"{name}: {run.reason}")
            pytest.skip(f"{name}: {run.reason}")
        if run.status != "ok":
            pytest.fail(f"{name} {dtype} {run.status}: {run.reason}\n" + "\n".join(run.stderr_tail))
    return engine_runs[(engine, dtype)]
