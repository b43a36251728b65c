"""Fault injection, for the tests only: make an engine process misbehave on purpose.

``COMPARE_FAULT_INJECT="ENGINE=KIND[,ENGINE=KIND]"``. KIND is ``segfault``, ``exit``,
``hang`` or ``raise`` (at start-up, outside any scenario), ``garbage`` (a malformed
result file), or ``scenario:ID`` (scenario ID's own code raises).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Dict, Optional

ENV = "COMPARE_FAULT_INJECT"
KINDS = ("segfault", "exit", "hang", "raise", "garbage", "scenario:ID")


def parse(text: str) -> Dict[str, str]:
    """``"ENGINE=KIND,..."`` -> {engine: kind}; raises ValueError naming the bad item and
    what is valid. An empty text injects nothing."""
    from compare.engines import ENGINES

    wanted: Dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        engine, _, kind = (part.strip() for part in item.partition("="))
        if engine not in ENGINES:
            raise ValueError(f"{ENV}: {item!r} does not start with an engine; valid engines: {', '.join(ENGINES)}")
        if engine in wanted:
            raise ValueError(f"{ENV}: {engine} is given twice")
        if kind.startswith("scenario:"):
            from compare.scenarios import catalog

            if kind.split(":", 1)[1] not in catalog():
                raise ValueError(f"{ENV}: {item!r} names no scenario (see `compare list`)")
        elif kind not in KINDS:
            raise ValueError(f"{ENV}: {item!r} has no valid kind; write ENGINE=KIND, KIND one of {', '.join(KINDS)}")
        wanted[engine] = kind
    return wanted


@functools.lru_cache(maxsize=4)  # asked once per scenario in an engine process
def _parsed(text: str) -> Dict[str, str]:
    return parse(text)


def kind_for(engine_id: str) -> Optional[str]:
    return _parsed(os.environ.get(ENV, "")).get(engine_id)


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
        with open(os.path.join(out_dir, "facts.json"), "w", encoding="utf-8") as f:
            f.write('{"versions": "not what the parent expects')


def scenario_should_break(engine_id: str, scenario_id: str) -> bool:
    return kind_for(engine_id) == f"scenario:{scenario_id}"
