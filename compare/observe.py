"""The recorder, run inside an engine's child process: what one scenario did to G and D.

Every tensor of G and D is snapshotted (trainable parameters and non-trainable state
apart) before the scenario and after each labelled step; "changed" means not
bit-identical. A call wrapped in ``ctx.attempt`` may raise: that is an observation
(status ``raised``). Any other exception means the scenario itself broke (``failed``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from compare import faults
from compare.engines.base import Arrays, Engine, grad_state
from compare.models.toy import ARTICLE, ARTICLE_RANDOM, Config, initial_weights, make_batches, rounding_tensors

INIT_CONFIGS = {"constant": ARTICLE, "random": ARTICLE_RANDOM}


# A gradient of a bias before a training-mode BatchNorm is zero in exact arithmetic (see
# ``compare.models.toy.rounding_tensors``). In float32 on the toy nets it measured at most 5e-7
# times the largest gradient of its network (random init; 4e-8 from the constant init);
# where BN runs in inference mode, so that the gradient is real, at least 4e-5 times
# (constant init) and 0.1 (random init). 2**-16 (1.5e-5) keeps noise 30 times below it,
# the margin that matters: no scenario backpropagates through an inference-mode BN into
# such a bias. Its own kernel is no yardstick: where D sees a constant image, the
# kernel's gradient is rounding noise too.
ROUNDING_BOUND = 2.0 ** -16

PACKAGE = os.path.dirname(os.path.abspath(__file__))
# how Python words a call or a lookup that our code makes and this framework version lacks
SIGNATURE_MISMATCH = re.compile(r"unexpected keyword argument|required (keyword-only |positional )?argument|"
                                r"takes (from )?\d+ (to \d+ )?positional argument")


class NotApplicable(Exception):
    """Our code needs an API this framework version does not have: the cell does not apply."""


def missing_api(exc: BaseException) -> Optional[str]:
    """Why ``exc`` shows that code of ours uses an API this framework version lacks, or None.

    That is an ImportError, an AttributeError or a signature TypeError whose innermost frame
    is our code, or a framework ``__getattr__`` (or the import machinery) our code called into.
    An error raised inside the framework is what the scenario observes, whatever its type."""
    if not isinstance(exc, (ImportError, AttributeError, TypeError)):
        return None
    if isinstance(exc, TypeError) and not SIGNATURE_MISMATCH.search(str(exc)):
        return None
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    ours = [i for i, code in enumerate(frames) if os.path.abspath(code.co_filename).startswith(PACKAGE + os.sep)]
    if not ours or not all(code.co_name == "__getattr__" or code.co_filename.startswith("<frozen importlib")
                           for code in frames[ours[-1] + 1:]):
        return None
    where = frames[ours[-1]]
    path = os.path.relpath(os.path.abspath(where.co_filename), os.path.dirname(PACKAGE))
    return (f"this version lacks an API our code uses ({path}, {where.co_name}): "
            f"{type(exc).__name__}: {exception_message(exc)}")


def tensor_names(tensors: Arrays, trainable, rounding: Dict[str, str] = {},
                 keep=lambda name: True) -> Dict[str, Dict[str, List[str]]]:
    """Tensor names per network (those ``keep`` accepts): trainable parameters, state, and
    the parameters whose gradient is rounding noise by construction (``rounding``)."""
    out = {net: {"params": [], "state": [], "rounding": []} for net in ("G", "D")}
    for name in tensors:
        if keep(name):
            kind = "rounding" if name in rounding else "params" if name in trainable else "state"
            out[name[0]][kind].append(name)
    return out


def changed_tensors(before: Arrays, after: Arrays, trainable,
                    rounding: Dict[str, str] = {}) -> Dict[str, Dict[str, List[str]]]:
    """Names of tensors that are not bit-identical, per network: parameters and state apart.

    A bias in ``rounding`` whose own layer's kernel moved is listed under "rounding": the
    optimizer stepped it with a gradient that is rounding noise, and Adam turns any nonzero
    noise into a step of about lr while an exact 0.0 leaves it, so whether it moved itself
    depends on the machine. It is listed there whether or not it moved; a bias that moved
    while its kernel did not is a real move, listed under "params"."""
    def changed(name):
        old, new = before[name], after[name]
        return old.shape != new.shape or old.tobytes() != new.tobytes()

    out = tensor_names(after, trainable, keep=lambda name: name not in rounding and changed(name))
    for bias, kernel in rounding.items():
        kinds = out[bias[0]]
        if kernel in kinds["params"]:
            kinds["rounding"].append(bias)
        elif bias in after and changed(bias):
            kinds["params"].append(bias)
    return out


def gradient_kinds(slots: Dict[str, Any], rounding: Dict[str, str]) -> Tuple[Dict[str, str], float]:
    """What each gradient slot holds: none, zero, nonzero, or rounding (a bias in ``rounding``
    whose kernel's gradient was computed, and whose own gradient is at most ROUNDING_BOUND
    times the largest gradient of its network: zero in exact arithmetic, 0.0 or noise
    depending on the machine). Also returns the largest such ratio seen, for the report."""
    kinds = {name: grad_state(value) for name, value in slots.items()}
    largest = 0.0
    for bias, kernel in rounding.items():
        value, own_kernel = slots.get(bias), slots.get(kernel)
        if value is None or own_kernel is None or not np.any(own_kernel):
            continue  # no gradient, or a cleared slot: exact values, nothing to classify
        scale = max(float(np.max(np.abs(g))) for n, g in slots.items() if n[0] == bias[0] and g is not None)
        ratio = float(np.max(np.abs(value))) / scale
        if ratio <= ROUNDING_BOUND:
            kinds[bias] = "rounding"
            largest = max(largest, ratio)
        else:
            kinds[bias] = "nonzero"
    return kinds, largest


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
        self.rounding = {b: k for b, k in rounding_tensors(config).items() if b in self.trainable}
        self.largest_rounding_ratio = 0.0
        self._start = self._last = self.snapshot()

    def snapshot(self) -> Arrays:
        return self.engine.export(self.gan)

    def tensor(self, name: str) -> np.ndarray:
        """One tensor of G or D by canonical name ("G.bn.moving_mean"), float64, canonical layout."""
        return self.engine.value(self.gan, name)

    def step(self, label: str, **extra) -> None:
        """Record which tensors changed since the previous step (and gradient slots, where kept)."""
        now = self.snapshot()
        entry = {"label": label, "changed": changed_tensors(self._last, now, self.trainable, self.rounding)}
        slots = self.engine.gradient_slots(self.gan)
        if slots is not None:
            entry["grads"], largest = gradient_kinds(slots, self.rounding)
            self.largest_rounding_ratio = max(self.largest_rounding_ratio, largest)
        entry.update(extra)
        self.steps.append(entry)
        self._last = now

    @contextlib.contextmanager
    def attempt(self, label: str):
        """A call that may raise as part of the idiom: the exception is recorded, not propagated."""
        try:
            yield
        except Exception as exc:  # the idiom's own error is the observation
            reason = missing_api(exc)
            if reason:
                raise NotApplicable(reason) from exc
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
        record["changed"] = changed_tensors(ctx._start, final, ctx.trainable, ctx.rounding)
        record["tensors"] = tensor_names(ctx._start, ctx.trainable, ctx.rounding)
        record["digests"] = digests(final, ctx.trainable, ctx.rounding)
        if ctx.largest_rounding_ratio:
            record["largest_rounding_ratio"] = ctx.largest_rounding_ratio
        record["steps"], record["values"] = ctx.steps, clean_values(ctx.values)
        if ctx.error:
            record["status"], record["error"] = "raised", ctx.error
    except Exception as exc:  # the scenario broke, or this version cannot run our code
        reason = str(exc) if isinstance(exc, NotApplicable) else missing_api(exc)
        if reason:
            record.update(status="not-applicable", reason=reason, steps=[])
            record["seconds"] = round(time.monotonic() - started, 3)
            return record
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


def digests(tensors: Arrays, trainable, rounding: Dict[str, str] = {}) -> Dict[str, str]:
    """A fingerprint of each network's parameters: equal digests mean bit-identical updates.
    Biases whose gradient is rounding noise are left out: their values depend on the machine."""
    out = {}
    for net in ("G", "D"):
        h = hashlib.sha256()
        for name in sorted(n for n in tensors if n.startswith(net + ".") and n in trainable and n not in rounding):
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
