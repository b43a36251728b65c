"""Fault injection, for the tests only: make an engine process misbehave on purpose.

``COMPARE_FAULT_INJECT="ENGINE=KIND[,ENGINE=KIND]"``. KIND is ``segfault``, ``exit``,
``hang`` or ``raise`` (at start-up, outside any scenario), ``garbage`` (a malformed
result file), or ``scenario:ID`` (scenario ID's own code raises).
"""

from __future__ import annotations

import os
import time
from typing import Optional

ENV = "COMPARE_FAULT_INJECT"


def kind_for(engine_id: str) -> Optional[str]:
    wanted = dict(item.split("=", 1) for item in os.environ.get(ENV, "").split(",") if "=" in item)
    return wanted.get(engine_id)


def inject(engine_id: str, stage: str, out_dir: str) -> None:
    kind = kind_for(engine_id)
    if kind is None:
        return
    if stage == "start" and kind == "segfault":
        import ctypes

        ctypes.string_at(0)  # a real segmentation fault
    if stage == "start" and kind == "exit":
        os._exit(7)
    if stage == "start" and kind == "hang":
        time.sleep(3600)
    if stage == "start" and kind == "raise":
        raise RuntimeError("injected failure outside any scenario")
    if stage == "end" and kind == "garbage":
        with open(os.path.join(out_dir, "facts.json"), "w") as f:
            f.write('{"versions": "not what the parent expects')


def scenario_should_break(engine_id: str, scenario_id: str) -> bool:
    return kind_for(engine_id) == f"scenario:{scenario_id}"
