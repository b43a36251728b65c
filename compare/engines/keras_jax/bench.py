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
        from compare.engines.keras_common.engine import build_optimizers
        from compare.engines.keras_jax.engine import state_of, stateless_step

        build_optimizers(gan)

        @jax.jit
        def step(state, real, z, y_real, y_fake):
            state, losses, _, _ = stateless_step(gan, state, real, z, y_real, y_fake)
            return state, losses[2]

        # the state lives outside the Keras variables between steps, as in the guide
        # (a tuple of lists, as step returns it: the same pytree, so no retrace)
        state = state_of(gan)

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
