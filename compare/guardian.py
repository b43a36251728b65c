"""``python -m compare.guardian``: removes what a run leaves when its parent dies abruptly.

The parent starts one guardian and writes to its stdin ``+pid PID`` / ``-pid PID`` for each engine
process (which leads a process group of its own) and ``+dir PATH`` / ``-dir PATH`` for each
temporary folder. When stdin reaches its end (the parent exited, however: even SIGKILL
closes its pipes), the guardian kills the process groups still registered and removes the
folders still registered. Imports nothing but the standard library.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pids, dirs = set(), set()
    for line in sys.stdin:
        op, _, value = line.rstrip("\n").partition(" ")
        if op == "+pid":
            pids.add(int(value))
        elif op == "-pid":
            pids.discard(int(value))
        elif op == "+dir":
            dirs.add(value)
        elif op == "-dir":
            dirs.discard(value)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
