"""Keras 3 on JAX: stateless calls, jax.value_and_grad for D and jax.vjp to reuse G's forward."""

from __future__ import annotations

import collections
import functools
import os

import jax
import keras
import numpy as np

from compare.engines.keras_common.engine import KerasEngine, build_optimizers


def variable_groups(gan) -> tuple:
    """G's and D's variables and both optimizers', in the order of a stateless step's state."""
    return (gan.G.trainable_variables, gan.G.non_trainable_variables, gan.D.trainable_variables,
            gan.D.non_trainable_variables, gan.optimizer_D.variables, gan.optimizer_G.variables)


def state_of(gan) -> tuple:
    """The values a stateless step reads (see ``variable_groups``)."""
    return tuple([v.value for v in variables] for variables in variable_groups(gan))


def applied(step, optimizer, opt_state, grads, train):
    """``train`` and ``opt_state`` after the optimizer's step where ``step`` holds. A Python
    bool decides while tracing; a traced one inside the program, so that one compiled program
    serves a gradient without a step and an iteration (a parity config and the check run both)."""
    if isinstance(step, bool):
        return optimizer.stateless_apply(opt_state, grads, train) if step else (train, opt_state)
    return jax.lax.cond(step, lambda: tuple(optimizer.stateless_apply(opt_state, grads, train)),
                        lambda: (list(train), list(opt_state)))


def stateless_step(gan, state, real, z, y_real, y_fake, step: bool = True):
    """The canonical iteration as a pure function of ``state`` (see ``state_of``), compiled
    with jax.jit: through ``compiled_step`` by the parity runs and the check, and by the bench
    in a step of its own (a plain ``True``, so no conditional). Returns the new state, the
    losses (D real, D fake, G) and the gradients of D and of G."""
    G, D, loss_func = gan.G, gan.D, gan.loss
    g_train, g_state, d_train, d_state, d_opt, g_opt = state

    def generate(g_train):
        return G.stateless_call(g_train, g_state, z, training=True)

    # One forward of G; g_backward carries it to the G step, like PyTorch's reused `fake`.
    fake, g_backward, g_state = jax.vjp(generate, g_train, has_aux=True)

    def d_loss(d_train, d_state):
        out_real, d_state = D.stateless_call(d_train, d_state, real, training=True)
        errD_real = loss_func(y_real, out_real)
        # `fake` is a plain array here: no gradient can reach G (the detach is implicit)
        out_fake, d_state = D.stateless_call(d_train, d_state, fake, training=True)
        errD_fake = loss_func(y_fake, out_fake)
        return errD_real + errD_fake, (d_state, errD_real, errD_fake)

    (_, (d_state, errD_real, errD_fake)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(d_train, d_state)
    d_train, d_opt = applied(step, gan.optimizer_D, d_opt, d_grads, d_train)

    def g_loss(fake, d_state):
        out, d_state = D.stateless_call(d_train, d_state, fake, training=True)
        return loss_func(y_real, out), d_state

    (errG, d_state), fake_grad = jax.value_and_grad(g_loss, has_aux=True)(fake, d_state)
    (g_grads,) = g_backward(fake_grad)
    g_train, g_opt = applied(step, gan.optimizer_G, g_opt, g_grads, g_train)
    return (g_train, g_state, d_train, d_state, d_opt, g_opt), (errD_real, errD_fake, errG), d_grads, g_grads


def compiled_step(gan):
    """jax.jit of the stateless step, ``step`` an argument of it: one program per model pair
    serves a gradient call and an iteration. Call it through ``stepping``."""
    return jax.jit(functools.partial(stateless_step, gan))


def stepping(compiled, step: bool):
    """``compiled`` (see ``compiled_step``) as a function of the state and the inputs."""
    return lambda state, *inputs: compiled(state, *inputs, np.bool_(step))


CACHE_EVENTS = "/jax/compilation_cache/cache_"
MIN_CACHED_COMPILE_S = 0.25


class KerasJaxEngine(KerasEngine):
    id = "keras-jax"
    keras = keras
    packages = ("keras", "jax", "jaxlib")

    # Every parity config runs its gradients stage and its iterations under one jax.jit program
    # per config, whether to step an argument of it (its constants are part of the program, so
    # configs do not share one): on one CPU thread the program takes 1.5 to 2 s to compile and
    # then 0.01 s a call, against 0.3 to 0.4 s a call eagerly, so even a config's eleven
    # calls (one gradient, ten iterations) repay it.

    def __init__(self):
        self.steps = {}
        self.cache_events = collections.Counter()

    def setup(self, dtype: str, threads: int = 1) -> None:
        if self.scratch:
            # Models of the same structure lower to the same XLA program: every scenario, init and
            # variant compiles a fresh combined model, and train_on_batch compiles its step again.
            # JAX's compilation cache, in this process's own folder, compiles each program once
            # (a hit loads the executable XLA made for the same program, so nothing computes otherwise).
            jax.config.update("jax_compilation_cache_dir", os.path.join(self.scratch, "xla"))
            # a train step takes seconds to compile, one eager op a few hundredths: storing those
            # would cost more than their few hits save
            jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_S)
            jax.monitoring.register_event_listener(self.count_cache_event)
        super().setup(dtype, threads)

    def count_cache_event(self, event: str, **kwargs) -> None:
        if event.startswith(CACHE_EVENTS):
            self.cache_events[event.rsplit("/", 1)[1]] += 1

    def compilation_cache(self):
        if not self.scratch:
            return None
        return {"kind": "jax compilation cache, one folder per engine process",
                "hits": self.cache_events["cache_hits"], "misses": self.cache_events["cache_misses"]}

    def step_function(self, gan, step: bool):
        """jax.jit of the stateless step, traced once per config (the GANs a config builds share
        structure and constants), with ``step`` passed in. Records the mode per config."""
        self.ran(gan.config, "iterations" if step else "gradients", "jax.jit")
        if gan.config not in self.steps:
            self.steps[gan.config] = compiled_step(gan)
        return stepping(self.steps[gan.config], step)

    def threads(self):
        # XLA's CPU thread pool is fixed by XLA_FLAGS, which the runner sets before the import
        import os

        return {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}

    def iteration(self, gan, batch, step: bool = True):
        build_optimizers(gan)
        state, losses, d_grads, g_grads = self.step_function(gan, step)(state_of(gan), *self.inputs(batch))
        # Write the new values back into the Keras variables.
        for group, values in zip(variable_groups(gan), state):
            for variable, value in zip(group, values):
                variable.assign(value)
        grads = self.grads_to_canonical(gan, "D", d_grads) | self.grads_to_canonical(gan, "G", g_grads)
        errD_real, errD_fake, errG = losses
        return {"D_real": float(errD_real), "D_fake": float(errD_fake), "G": float(errG)}, grads


ENGINE = KerasJaxEngine()
