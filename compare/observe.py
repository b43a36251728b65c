"""The recorder, run inside an engine's child process: what one scenario did to G and D.

Every tensor of G and D is snapshotted (trainable parameters and non-trainable state
apart) before the scenario and after each labelled step; "changed" means not
bit-identical. A call wrapped in ``ctx.attempt`` may raise: that is an observation
(status ``raised``). Any other exception means the scenario itself broke (``failed``).
"""

from __future__ import annotations

import contextlib
import hashlib
import dataclasses
import time
import traceback
from typing import Any, Dict, List, Optional

import numpy as np

from compare import faults
from compare.engines.base import Arrays, Engine
from compare.model import ARTICLE, Config, initial_weights, make_batches

INIT_CONFIGS = {
    "constant": ARTICLE,
    "random": dataclasses.replace(ARTICLE, name="article-random-init", init="random"),
}


def tensor_names(tensors: Arrays, trainable, keep=lambda name: True) -> Dict[str, Dict[str, List[str]]]:
    """Tensor names per network, parameters and state apart (those ``keep`` accepts)."""
    out = {"G": {"params": [], "state": []}, "D": {"params": [], "state": []}}
    for name in tensors:
        if keep(name):
            out[name[0]]["params" if name in trainable else "state"].append(name)
    return out


def changed_tensors(before: Arrays, after: Arrays, trainable) -> Dict[str, Dict[str, List[str]]]:
    """Names of tensors that are not bit-identical, per network, parameters and state apart."""
    def changed(name):
        old, new = before[name], after[name]
        return old.shape != new.shape or old.tobytes() != new.tobytes()

    return tensor_names(after, trainable, changed)


class Context:
    """What a scenario implementation gets: the models, optimizers, loss, inputs, and the recorder."""

    def __init__(self, engine: Engine, config: Config, batch: Arrays, variant: str = ""):
        self.engine = engine
        self.variant = variant
        self.config = config
        self.gan = engine.build(config, initial_weights(config))
        self.G, self.D = self.gan.G, self.gan.D
        self.optimizer_G, self.optimizer_D = self.gan.optimizer_G, self.gan.optimizer_D
        self.loss = self.gan.loss
        self.real, self.z, self.y_real, self.y_fake = engine.inputs(batch)
        self.keras = getattr(engine, "keras", None)
        self.steps: List[dict] = []
        self.values: Dict[str, Any] = {}
        self.error: Optional[dict] = None
        self.trainable = engine.trainable(self.gan)
        self._start = self._last = self.snapshot()

    def snapshot(self) -> Arrays:
        return self.engine.export(self.gan)

    def step(self, label: str, **extra) -> None:
        """Record which tensors changed since the previous step (and gradient slots, where kept)."""
        now = self.snapshot()
        entry = {"label": label, "changed": changed_tensors(self._last, now, self.trainable)}
        grads = self.engine.grad_states(self.gan)
        if grads is not None:
            entry["grads"] = grads
        entry.update(extra)
        self.steps.append(entry)
        self._last = now

    @contextlib.contextmanager
    def attempt(self, label: str):
        """A call that may raise as part of the idiom: the exception is recorded, not propagated."""
        try:
            yield
        except Exception as exc:  # the idiom's own error is the observation
            error = {"type": type(exc).__name__, "message": exception_message(exc)}
            self.error = self.error or error
            self.step(label, error=error)

    def record(self, key: str, value: Any) -> None:
        """A named value for claims and the report (losses, timings, gradient norms)."""
        if hasattr(value, "item"):
            value = value.item() if getattr(value, "size", 1) == 1 or getattr(value, "ndim", 1) == 0 else value
        self.values[key] = value


def observe(engine: Engine, scenario, init: str, variant: str = "") -> dict:
    """Run one scenario on one engine from one initialisation; never raises."""
    record = {"scenario": scenario.id, "engine": engine.id, "init": init, "variant": variant,
              "dtype": scenario.dtype,
              "status": "ok", "error": None, "changed": None, "steps": [], "values": {}}
    started = time.monotonic()
    ctx = None
    try:
        ctx = Context(engine, INIT_CONFIGS[init], make_batches(1)[0], variant)
        if faults.scenario_should_break(engine.id, scenario.id):
            raise RuntimeError("injected failure in the scenario's own code")
        scenario.implementations[engine.id](ctx)
        final = ctx.snapshot()
        record["changed"] = changed_tensors(ctx._start, final, ctx.trainable)
        record["tensors"] = tensor_names(ctx._start, ctx.trainable)
        record["digests"] = digests(final, ctx.trainable)
        record["steps"], record["values"] = ctx.steps, clean_values(ctx.values)
        if ctx.error:
            record["status"], record["error"] = "raised", ctx.error
    except Exception as exc:  # the scenario broke: not an observation of the idiom
        record["status"] = "failed"
        record["error"] = {"type": type(exc).__name__, "message": exception_message(exc),
                           "traceback": traceback.format_exc().splitlines()[-12:]}
        if ctx is not None:
            record["steps"] = ctx.steps
    record["seconds"] = round(time.monotonic() - started, 3)
    return record


def exception_message(exc: BaseException) -> str:
    """First and last line of the message: TensorFlow puts "in user code:" first and
    the reason last, between them a traceback whose paths vary from machine to machine."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text[:500]


def digests(tensors: Arrays, trainable) -> Dict[str, str]:
    """A fingerprint of each network's parameters: equal digests mean bit-identical updates."""
    out = {}
    for net in ("G", "D"):
        h = hashlib.sha256()
        for name in sorted(n for n in tensors if n.startswith(net + ".") and n in trainable):
            h.update(name.encode())
            h.update(tensors[name].tobytes())
        out[net] = h.hexdigest()[:16]
    return out


def clean_values(values: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, (np.floating, np.integer)):
            value = value.item()
        out[key] = value
    return out
