"""Keras half of ``compare bench``, shared by Keras 3 (every backend) and Keras 2 (tf_keras):
the models at both sizes and the two combined-model idioms, which are the same Keras code
on every backend. Each backend's bench module subclasses ``KerasBench`` and writes only its
custom gradient step, wrapped the way users wrap it (tf.function, jax.jit, or eager).

Imported only in a bench child process, after the backend is fixed.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Dict, Optional

import numpy as np

from compare.engines.keras_common.engine import to_nhwc
from compare.models import bench_batch, pair
from compare.models.dcgan64 import ADAM


def combined_cost(d_call_trains_d: bool, combined_call_trains_d: bool):
    """FLOP and memory formulas (blocks: see compare.bench) of one combined-model iteration:
    D.train_on_batch on real and on fake, G.predict_on_batch, combined.train_on_batch.

    One G forward more than the custom step (predict, then G again inside the combined
    model). Which backward passes run depends on what each call really trains, which is
    observed, not assumed: where a D frozen after its compile() is not trained by its own
    train_on_batch (Keras 3: see the freeze.classic_recipe scenario), its calls make no
    backward at all."""
    flops = {"FG": 2, "FD": 3}
    if d_call_trains_d:
        flops["BDw"] = 2
    # the combined call's backward through D makes the input gradient only, unless it trains D
    flops["BDwx" if combined_call_trains_d else "BDx"] = 1
    flops["BG"] = 1
    # the peak is the combined call's backward; D's own gradients are dead once its call returns
    memory = {"PG": 1, "PD": 1, "AG": 1, "ADwx": 1} if combined_call_trains_d else {"PG": 1, "AG": 1, "ADx": 1}
    return flops, memory


class Gan:
    """Fresh G, D (a built-in pair at its builders' defaults), one Adam each and the batch, as
    backend tensors (NHWC)."""

    def __init__(self, bench: "KerasBench", size: str, seed: int = 0):
        keras = bench.keras
        keras.utils.set_random_seed(seed)
        self.G, self.D = pair(size).build_keras(keras)
        self.optimizer_G, self.optimizer_D = bench.adam(), bench.adam()
        self.loss = keras.losses.BinaryCrossentropy(from_logits=True)
        batch = bench_batch(size, seed + 1)
        n = batch["real"].shape[0]
        self.real, self.z = bench.tensor(to_nhwc(batch["real"])), bench.tensor(to_nhwc(batch["z"]))
        self.y_real, self.y_fake = bench.tensor(np.ones((n, 1))), bench.tensor(np.zeros((n, 1)))


def moves(D, call) -> bool:
    """Whether ``call`` changes any of D's weights."""
    weights = lambda: [np.array(v.numpy()) for v in D.weights if "moving" not in v.name]  # noqa: E731
    before = weights()
    call()
    return any(not np.array_equal(a, b) for a, b in zip(before, weights()))


class Idiom:
    def __init__(self, idiom_id: str, step, sync, flops: Dict[str, int], memory: Dict[str, int],
                 facts: Optional[dict] = None):
        self.id, self.step, self.sync = idiom_id, step, sync
        self.flops, self.memory, self.facts = flops, memory, facts or {}


class KerasBench:
    """Subclasses set ``keras`` and ``packages`` and write ``setup``, ``custom_step`` and the
    custom step's cost (``custom_flops``, ``custom_memory``, ``custom_wrap``)."""

    keras: Any = None
    packages = ("keras",)
    idioms = ("custom-step", "combined-toggling", "combined-frozen")
    # compiled steps (tf.function, jax.jit) ask for G's gradients only, so the G step's
    # backward through D makes D's input gradient only: the rest is pruned
    custom_flops = {"FG": 1, "FD": 3, "BDw": 2, "BDx": 1, "BG": 1}
    custom_memory = {"PG": 1, "PD": 1, "AG": 1, "ADx": 1}
    custom_wrap = ""

    def setup(self, device: str) -> Optional[str]:
        raise NotImplementedError

    def versions(self) -> Dict[str, str]:
        return {name: importlib.metadata.version(name) for name in self.packages}

    def tensor(self, x: np.ndarray):
        return self.keras.ops.convert_to_tensor(x.astype("float32"))

    def adam(self):
        return self.keras.optimizers.Adam(learning_rate=ADAM["lr"], beta_1=ADAM["beta_1"], beta_2=ADAM["beta_2"])

    def sync(self, out) -> None:
        float(np.asarray(out))  # a user's loss logging: waits for the step's result

    def custom_step(self, gan: Gan):
        """A callable running one canonical iteration (the DCGAN example's order), returning errG."""
        raise NotImplementedError

    def gpu_memory(self) -> Optional[tuple]:
        return None

    def build(self, idiom: str, size: str, device: str) -> Idiom:
        gan = Gan(self, size)
        if idiom == "custom-step":
            return Idiom(idiom, self.custom_step(gan), self.sync, self.custom_flops, self.custom_memory,
                         {"wrapped": self.custom_wrap})
        return self.combined(idiom, gan)

    def combined(self, idiom: str, gan: Gan) -> Idiom:
        keras, G, D = self.keras, gan.G, gan.D
        real, z, y_real, y_fake = gan.real, gan.z, gan.y_real, gan.y_fake
        if idiom == "combined-frozen":
            # the classic recipe (eriklindernoren/Keras-GAN): D compiled while trainable, then
            # frozen for good before the combined model is built and compiled
            D.compile(optimizer=gan.optimizer_D, loss=gan.loss)
            D.trainable = False
            combined = keras.Sequential([G, D])
            combined.compile(optimizer=gan.optimizer_G, loss=gan.loss)

            def step():
                D.train_on_batch(real, y_real)
                fake = G.predict_on_batch(z)
                D.train_on_batch(fake, y_fake)
                return combined.train_on_batch(z, y_real)

            def g_call():
                return combined.train_on_batch(z, y_real)
        else:
            # jacobgil/keras-dcgan: combined compiled with D frozen, D compiled while trainable,
            # and D.trainable flipped off and on around every combined call
            D.trainable = False
            combined = keras.Sequential([G, D])
            combined.compile(optimizer=gan.optimizer_G, loss=gan.loss)
            D.trainable = True
            D.compile(optimizer=gan.optimizer_D, loss=gan.loss)

            def step():
                D.train_on_batch(real, y_real)
                fake = G.predict_on_batch(z)
                D.train_on_batch(fake, y_fake)
                D.trainable = False
                errG = combined.train_on_batch(z, y_real)
                D.trainable = True
                return errG

            def g_call():
                D.trainable = False
                try:
                    return combined.train_on_batch(z, y_real)
                finally:
                    D.trainable = True
        def d_call():
            return D.train_on_batch(real, y_real)

        # Which formula holds depends on what each call trains: observe it once, as the
        # step makes the call (a semantic fact, not a timing).
        d_call_trains_d, combined_call_trains_d = (moves(D, call) for call in (d_call, g_call))
        flops, memory = combined_cost(d_call_trains_d, combined_call_trains_d)
        facts = {"D call trains D": d_call_trains_d, "combined call trains D": combined_call_trains_d,
                 "jit_compile": str(getattr(combined, "jit_compile", "n/a"))}
        return Idiom(idiom, step, lambda out: float(np.asarray(out)), flops, memory, facts)
