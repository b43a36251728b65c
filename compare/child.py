"""Entry point of an engine's child process: ``python -m compare.child ENGINE DTYPE OUT_DIR``.

Writes ``OUT_DIR/facts.json`` and ``OUT_DIR/arrays.npz``, each complete or not at all,
and reports progress on stderr. Its framework is imported here and nowhere else.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

import numpy as np


def main(argv) -> int:
    engine_id, dtype, out_dir = argv
    from compare.engines import ENGINES
    from compare.program import run_program

    spec = ENGINES[engine_id]
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{engine_id} {dtype} {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    progress("importing framework")
    engine = importlib.import_module(spec.module).ENGINE
    facts, arrays = run_program(engine, dtype, progress)
    facts["seconds"] = time.monotonic() - started
    np.savez(os.path.join(out_dir, "arrays.tmp.npz"), **arrays)
    os.replace(os.path.join(out_dir, "arrays.tmp.npz"), os.path.join(out_dir, "arrays.npz"))
    with open(os.path.join(out_dir, "facts.tmp.json"), "w") as f:
        json.dump(facts, f)
    os.replace(os.path.join(out_dir, "facts.tmp.json"), os.path.join(out_dir, "facts.json"))
    progress("done")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception:
        traceback.print_exc()
        sys.exit(3)
