"""Keras 3 on JAX in ``compare bench``: the engine's stateless iteration (jax.vjp to reuse
G's forward, jax.value_and_grad for D) as one jax.jit-compiled function of the state, the
way the Keras guide "Writing a training loop from scratch in JAX" writes it."""

from __future__ import annotations

import os

# XLA's CPU thread pool is sized when the backend starts: one thread, as every engine
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

from typing import Optional  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402

from compare.engines.keras_common.bench import KerasBench  # noqa: E402


class KerasJaxBench(KerasBench):
    keras = keras
    packages = ("keras", "jax", "jaxlib")
    custom_wrap = "jax.jit"

    def setup(self, device: str) -> Optional[str]:
        if device == "cuda":
            if jax.default_backend() != "gpu":
                return f"jax {jax.__version__} sees no GPU (backend {jax.default_backend()})"
            jax.config.update("jax_default_matmul_precision", "highest")  # no TF32
        return None

    def sync(self, out) -> None:
        jax.block_until_ready(out)
        float(out)

    def custom_step(self, gan):
        G, D, loss_func = gan.G, gan.D, gan.loss
        opt_D, opt_G = gan.optimizer_D, gan.optimizer_G
        opt_D.build(D.trainable_variables)
        opt_G.build(G.trainable_variables)

        @jax.jit
        def step(state, real, z, y_real, y_fake):
            g_train, g_state, d_train, d_state, d_opt, g_opt = state

            def generate(g_train):
                return G.stateless_call(g_train, g_state, z, training=True)

            # One forward of G; g_backward carries it to the G step, like PyTorch's reused `fake`.
            fake, g_backward, g_state = jax.vjp(generate, g_train, has_aux=True)

            def d_loss(d_train, d_state):
                out_real, d_state = D.stateless_call(d_train, d_state, real, training=True)
                out_fake, d_state = D.stateless_call(d_train, d_state, fake, training=True)
                return loss_func(y_real, out_real) + loss_func(y_fake, out_fake), d_state

            (_, d_state), d_grads = jax.value_and_grad(d_loss, has_aux=True)(d_train, d_state)
            d_train, d_opt = opt_D.stateless_apply(d_opt, d_grads, d_train)

            def g_loss(fake, d_state):
                out, d_state = D.stateless_call(d_train, d_state, fake, training=True)
                return loss_func(y_real, out), d_state

            (errG, d_state), fake_grad = jax.value_and_grad(g_loss, has_aux=True)(fake, d_state)
            (g_grads,) = g_backward(fake_grad)
            g_train, g_opt = opt_G.stateless_apply(g_opt, g_grads, g_train)
            return (g_train, g_state, d_train, d_state, d_opt, g_opt), errG

        # the state lives outside the Keras variables between steps, as in the guide
        # (a tuple of lists, as step returns it: the same pytree, so no retrace)
        state = tuple([v.value for v in variables] for variables in (
            G.trainable_variables, G.non_trainable_variables, D.trainable_variables,
            D.non_trainable_variables, opt_D.variables, opt_G.variables))

        def run():
            nonlocal state
            state, errG = step(state, gan.real, gan.z, gan.y_real, gan.y_fake)
            return errG

        return run

    def gpu_memory(self):
        device = jax.devices()[0]
        state = {}

        def reset():  # JAX keeps no resettable peak: the process-wide peak is read instead
            state["base"] = device.memory_stats()["bytes_in_use"]

        def read():
            return device.memory_stats()["peak_bytes_in_use"], state["base"]

        return reset, read


BENCH = KerasJaxBench()
