"""Entry point of an engine's child process:
``python -m compare.child ENGINE DTYPE OUT_DIR [--scenarios ID,ID] [--no-parity] [--threads N]``.

Writes ``OUT_DIR/facts.json`` and ``OUT_DIR/arrays.npz``, each complete or not at all,
and reports progress on stderr. Its framework is imported here and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import stat
import sys
import threading
import time
import traceback

import numpy as np

from compare import faults


def end_with_parent() -> None:
    """When stdin is a pipe from the parent, its end means the parent is gone: end this
    process group at once rather than run on unobserved."""
    if not stat.S_ISFIFO(os.fstat(0).st_mode):
        return

    def watch() -> None:
        while os.read(0, 4096):
            pass
        if os.getpgid(0) == os.getpid():  # it leads its own group (the runner starts it so)
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def write(out_dir: str, name: str, facts=None, arrays=None) -> None:
    """One result file (``arrays`` as .npz, else ``facts`` as JSON), renamed into place when complete."""
    path = os.path.join(out_dir, name)
    if arrays is not None:
        np.savez(path + ".tmp.npz", **arrays)
        os.replace(path + ".tmp.npz", path)
    else:
        with open(path + ".tmp", "w") as f:
            json.dump(facts, f)
        os.replace(path + ".tmp", path)


def main(argv) -> int:
    end_with_parent()
    parser = argparse.ArgumentParser(prog="compare.child")
    parser.add_argument("engine")
    parser.add_argument("dtype")
    parser.add_argument("out_dir")
    parser.add_argument("--scenarios", help="comma-separated scenario ids (default: all; empty: none)")
    parser.add_argument("--no-parity", action="store_true")
    args = parser.parse_args(argv)
    engine_id, dtype, out_dir = args.engine, args.dtype, args.out_dir
    faults.inject(engine_id, "start", out_dir)
    from compare.engines import ENGINES
    from compare.program import run_program

    spec = ENGINES[engine_id]
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{engine_id} {dtype} {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    progress("importing framework")
    engine = importlib.import_module(spec.module).ENGINE
    imported = time.monotonic() - started
    only = None if args.scenarios is None else [s for s in args.scenarios.split(",") if s]
    facts, arrays = run_program(engine, dtype, progress, parity=not args.no_parity, scenarios=only,
                                threads=int(os.environ.get("COMPARE_THREADS", "1")),
                                scratch=os.path.join(out_dir, "scratch"))
    facts["seconds"] = time.monotonic() - started
    facts["phase_seconds"]["import"] = imported
    write(out_dir, "arrays.npz", arrays=arrays)
    write(out_dir, "facts.json", facts)
    faults.inject(engine_id, "end", out_dir)
    progress("done")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception:
        traceback.print_exc()
        sys.exit(3)
