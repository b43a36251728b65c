"""The check's use of the known causes (``compare.check.diagnose``): read in the engine
processes, switched off in both halves of a counterfactual pair.

The torch process reads each cause's torch half and passes it on as JSON; a Keras process
reads its own half against it and says which causes are suspects. A counterfactual run
applies the same switches, from the same readings, in the torch and the Keras process.
"""

from __future__ import annotations

from typing import Dict, List

from compare.check import diagnose
from compare.check.pairfile import Pair, PairError


def context(pair: Pair, dtype: str) -> diagnose.Context:
    """The settings the check really runs with (Adam's as resolved for each framework)."""
    return diagnose.Context.of(pair, dtype)


def torch_readings(pair: Pair, nets, dtype: str) -> Dict[str, dict]:
    """Each cause's reading of the torch pair; a reader that cannot read this pair says why."""
    out = {}
    for cause in diagnose.CAUSES:
        try:
            out[cause.id] = cause.read_torch(nets, context(pair, dtype))
        except Exception as exc:  # a pair the reader was not written for: no reading, said so
            out[cause.id] = {"unreadable": f"{type(exc).__name__}: {exc}"}
    return out


def keras_readings(pair: Pair, nets, keras, dtype: str, torch: Dict[str, dict]) -> List[dict]:
    """Per cause: both sides' settings and whether the cause is a suspect."""
    out = []
    for cause in diagnose.CAUSES:
        entry = {"id": cause.id, "title": cause.title, "switch": cause.switched}
        seen = torch.get(cause.id, {})
        if "unreadable" in seen:
            out.append({**entry, "torch": seen, "keras": None, "suspect": False})
            continue
        try:
            out.append({**entry, **cause.read(seen, nets, keras, context(pair, dtype))})
        except Exception as exc:
            out.append({**entry, "torch": seen, "keras": {"unreadable": f"{type(exc).__name__}: {exc}"},
                        "suspect": False})
    return out


def switched_source(source, switches: List[dict]):
    """``source`` with each cause in ``switches`` ({"id", "torch", "keras"}: the readings)
    switched off. Raises PairError where a cause has no counterfactual for this pair."""
    for item in switches:
        cause = diagnose.BY_ID[item["id"]]
        new = cause.switch(source, {"torch": item["torch"], "keras": item["keras"]})
        if new is None:
            raise PairError(f"{item['id']}: no counterfactual pair can be built for it")
        source = new
    return source
