"""Entry point of a check's engine process:
``python -m compare.check.child ENGINE DTYPE FILE OUT_DIR --iterations N [--ref DIR] [--switch FILE]``.

The torch process (the reference) writes the specs, the starting weights and its arrays;
a Keras process builds its pair while the reference runs, then reads the first two from
``--ref`` (or exits 4 when the reference gives none). Each writes ``facts.json`` and
``arrays.npz`` complete or not at all. A FILE.py that is not a usable pair exits 2 with
its one-line reason in ``error.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback

import numpy as np

from compare.child import end_with_parent, write

USAGE = 2
NOT_RUN = 4  # the reference gave no result to compare with
ABANDONED = "abandoned"  # left in the reference's folder by the parent: its result will not come


def reference_ready(folder: str, progress) -> bool:
    """Wait until the reference's result is complete (its facts.json is written last), or
    its process is over without one (the parent leaves ``abandoned`` in its folder)."""
    said = False
    while not os.path.exists(os.path.join(folder, "facts.json")):
        if os.path.exists(os.path.join(folder, ABANDONED)):
            progress("the reference gave no result")
            return False
        if not said:
            progress("waiting for the reference")
            said = True
        time.sleep(0.02)
    return True


def reproduction(first: dict, second: dict) -> dict:
    """How far the reference's second run is from its first: the largest difference and where."""
    worst, where = 0.0, None
    for key, value in first.items():
        other = second.get(key)
        diff = float("inf") if other is None or other.shape != value.shape else (
            float(np.max(np.abs(value - other))) if value.size else 0.0)
        if not np.isfinite(value).all():
            diff = 0.0 if other is not None and np.array_equal(value, other, equal_nan=True) else float("inf")
        if diff > worst:
            worst, where = diff, key
    return {"max_abs_diff": worst, "worst": where}


def main(argv) -> int:
    end_with_parent()
    parser = argparse.ArgumentParser(prog="compare.check.child")
    parser.add_argument("engine")
    parser.add_argument("dtype")
    parser.add_argument("file")
    parser.add_argument("out_dir")
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--ref")
    parser.add_argument("--switch", help="a JSON file: the causes to switch off, with their readings")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{args.engine} {args.dtype} {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr,
              flush=True)

    from compare.check import causes
    from compare.check.pairfile import PairError, from_module, load
    from compare.engines import ENGINES, REFERENCE
    from compare.program import bn_estimator_probe

    progress("importing framework")
    engine = importlib.import_module(ENGINES[args.engine].module).ENGINE
    imported = time.monotonic() - started
    if args.engine != REFERENCE:
        from compare.check.keras_side import quick_draws, tensorflow_only_when_loaded

        tensorflow_only_when_loaded()
        quick_draws(engine)
    try:
        source = load(args.file)
        switches = []
        if args.switch:
            with open(args.switch) as f:
                switches = json.load(f)
            source = causes.switched_source(source, switches)
        pair = from_module(args.file, source)
        dtype = pair.dtype or args.dtype  # a counterfactual may change the precision
        engine.setup(dtype, int(os.environ.get("COMPARE_THREADS", "1")))
        progress("building the pair")
        if args.engine == REFERENCE:
            from compare.check.torch_side import TorchSide

            side = TorchSide(pair, dtype, args.iterations)
            arrays = side.run(progress)
            progress("again, to see that the reference reproduces itself")
            facts = {**side.facts(), "reproduces": reproduction(arrays, side.run(lambda m: None)),
                     "bn_estimator": bn_estimator_probe(engine),
                     "causes": causes.torch_readings(pair, (side.G, side.D), dtype)}
            write(args.out_dir, "weights.npz", arrays=side.weights)
        else:
            from compare.check.keras_side import KerasSide

            side = KerasSide(engine, pair, dtype, args.iterations)
            own = side.own_facts()  # what needs no reference, read while it runs
            if not reference_ready(args.ref, progress):
                return NOT_RUN
            with open(os.path.join(args.ref, "facts.json")) as f:
                ref_facts = json.load(f)
            side.attach(ref_facts, dict(np.load(os.path.join(args.ref, "weights.npz"))))
            arrays = side.run(progress)
            facts = {**own, **side.facts(),
                     "causes": causes.keras_readings(pair, (side.G, side.D), side.keras, dtype, ref_facts["causes"])}
    except PairError as exc:
        write(args.out_dir, "error.json", {"error": str(exc)})
        return USAGE
    facts.update({"versions": engine.versions(), "dtype": dtype, "switched": [x["id"] for x in switches],
                  "seconds": time.monotonic() - started, "import_seconds": imported})
    write(args.out_dir, "arrays.npz", arrays=arrays)
    write(args.out_dir, "facts.json", facts)
    progress("done")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception:
        traceback.print_exc()
        sys.exit(3)
