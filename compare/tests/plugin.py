"""The pytest plugin of compare's tests: the ``--engines`` option, and one run of each engine
in each dtype the selected tests read, shared by the whole session.

pytest loads it at start-up (the ``pytest11`` entry point of the installed package, or
``-p compare.tests.plugin``), so ``--engines`` works with ``--pyargs compare`` from any folder.
Engines run in child processes exactly as ``python -m compare report`` runs them; an
engine that is not installed makes its tests skip, with the install command as reason.
Only the engines that the selected tests need are started: ``--engines torch,keras-jax``
selects the tests of those engines (and the reference, torch, which every comparison
needs); a test that speaks about every engine asks for all of the selected ones. A test reads
the dtype of its ``dtype`` parameter, or those its ``dtypes`` marker names, else both.
"""

from __future__ import annotations

import os

import pytest

from compare.engines import ENGINES, REFERENCE, parse_engines

DTYPES = ("float32", "float64")
KERAS_ENGINES = [e for e in ENGINES if e != REFERENCE]
TESTS = os.path.dirname(os.path.abspath(__file__))


def pytest_addoption(parser):
    parser.getgroup("compare").addoption(
        "--engines", default=None,
        help=f"comma-separated engine ids whose tests run (default: all): {', '.join(ENGINES)}")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts engine processes of its own (beyond the session's), "
                                       "pytest or a wheel build")
    config.addinivalue_line("markers", "dtypes(*names): the dtypes of engine_runs the test reads "
                                       "(default: its dtype parameter, else both)")
    # the tests' `compare report` runs neither read nor fill the user's result cache; the
    # session's own is removed when the session ends
    import tempfile

    config._compare_cache = os.environ["COMPARE_CACHE_DIR"] = tempfile.mkdtemp(prefix="compare-test-cache-")


def pytest_unconfigure(config):
    folder = getattr(config, "_compare_cache", None)
    if folder:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def selected_engines(config):
    text = config.getoption("--engines")
    try:
        return parse_engines(text) if text is not None else list(ENGINES)
    except ValueError as exc:
        raise pytest.UsageError(f"--engines: {exc}")


def item_engine(item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("engine") if callspec else None


def own_test(item) -> bool:
    """A test of this package: the plugin is loaded in every session, and leaves other suites alone."""
    return os.path.commonpath([TESTS, str(item.path)]) == TESTS


def pytest_collection_modifyitems(config, items):
    """Deselect the tests of engines not asked for with --engines."""
    wanted = selected_engines(config)
    keep = [item for item in items if not own_test(item) or item_engine(item) in (None, *wanted)]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def item_dtypes(item):
    """The dtypes a test reads: its ``dtypes`` marker, else its dtype parameter, else both."""
    marker = item.get_closest_marker("dtypes")
    if marker:
        return set(marker.args)
    callspec = getattr(item, "callspec", None)
    return {callspec.params["dtype"]} if callspec and "dtype" in callspec.params else set(DTYPES)


def needed_runs(session):
    """The (engine, dtype) runs the selected tests read from ``engine_runs``, in registry order."""
    wanted, needed = selected_engines(session.config), set()
    for item in session.items:
        if "engine_runs" in getattr(item, "fixturenames", ()):
            engine = item_engine(item)
            needed |= {(e, d) for e in ({REFERENCE, engine} if engine else {REFERENCE, *wanted})
                       for d in item_dtypes(item)}
    return sorted(needed, key=lambda pair: (list(ENGINES).index(pair[0]), pair[1]))


@pytest.fixture(scope="session")
def engine_runs(request, tmp_path_factory):
    """Every run the selected tests need, started at once (in parallel, once per session)."""
    from compare.runner import EngineRun, run_engines

    workdir = tmp_path_factory.mktemp("engines")
    needed = needed_runs(request.session)
    runs = run_engines(sorted({e for e, _ in needed}, key=list(ENGINES).index), list(DTYPES), str(workdir),
                       skip={(e, d) for e in ENGINES for d in DTYPES if (e, d) not in needed})
    for engine in ENGINES:  # the engines no selected test needs are not started
        for dtype in DTYPES:
            runs.setdefault((engine, dtype), EngineRun(engine, dtype, "not-run", "not needed by the selected tests"))
    return runs


@pytest.fixture(scope="session")
def parity_records(engine_runs):
    from compare import parity

    return parity.compare_runs(engine_runs)


def require_run(engine_runs, engine: str, dtype: str):
    """The run, or a skip (not installed) or a failure (crashed, timed out) that says why."""
    for name in (REFERENCE, engine):
        run = engine_runs[(name, dtype)]
        if run.status == "not-run":
            pytest.skip(f"{name}: {run.reason}")
        if run.status == "unavailable":
            if os.environ.get("COMPARE_REQUIRE_ALL_ENGINES"):  # CI: a skipped engine is a defect
                pytest.fail(f"{name}: {run.reason}")
            pytest.skip(f"{name}: {run.reason}")
        if run.status != "ok":
            pytest.fail(f"{name} {dtype} {run.status}: {run.reason}\n" + "\n".join(run.stderr_tail))
    return engine_runs[(engine, dtype)]


def strip_timings(value):
    """results.json without what may differ between identical runs: timings and dates."""
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if k not in ("seconds", "phase_seconds", "generated")}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value
