"""Keras 3 on TensorFlow: the canonical iteration with one persistent GradientTape."""

from __future__ import annotations

import functools

import tensorflow as tf
import keras

from compare.engines.keras_common.engine import KerasEngine, build_optimizers


def tape_step(gan, real, z, y_real, y_fake, step: bool = True):
    """The canonical iteration with one persistent GradientTape, on any Keras G and D (Keras 3
    or Keras 2; the bench runs it inside tf.function). Returns the losses and gradients."""
    G, D, loss_func = gan.G, gan.D, gan.loss
    # One persistent tape records G's forward once; the G step below reuses `fake`.
    with tf.GradientTape(persistent=True) as tape:
        errD_real = loss_func(y_real, D(real, training=True))
        fake = G(z, training=True)
        errD_fake = loss_func(y_fake, D(tf.stop_gradient(fake), training=True))
        errD = errD_real + errD_fake
    d_grads = tape.gradient(errD, D.trainable_weights)
    if step:
        gan.optimizer_D.apply_gradients(zip(d_grads, D.trainable_weights))
    with tape:  # resume recording: D(fake) with D's new weights, as PyTorch does
        errG = loss_func(y_real, D(fake, training=True))
    g_grads = tape.gradient(errG, G.trainable_weights)
    if step:
        gan.optimizer_G.apply_gradients(zip(g_grads, G.trainable_weights))
    del tape
    return errD_real, errD_fake, errG, d_grads, g_grads


def one_thread(threads: int = 1) -> None:
    """TensorFlow on ``threads`` threads (one, as the bench and by default the engines run)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def compiled_tape_step(gan):
    """``tape_step`` under tf.function, as TensorFlow users compile a custom train step (the
    bench times this one too); the optimizers' slots are made first, outside the trace."""
    build_optimizers(gan)
    return tf.function(functools.partial(tape_step, gan))


def tape_iteration(engine: KerasEngine, gan, batch, step: bool = True):
    """Shared with tf-keras: the same code runs on Keras 2, only the module differs. The
    iterations run compiled, traced once per GAN; the lone gradient call (``step=False``)
    runs eagerly, as one call never repays a trace."""
    if step:
        if not hasattr(gan, "compiled_step"):
            gan.compiled_step = compiled_tape_step(gan)
        function = gan.compiled_step
    else:
        function = functools.partial(tape_step, gan, step=False)
    engine.ran(gan.config, "iterations" if step else "gradients", "tf.function" if step else "eager")
    errD_real, errD_fake, errG, d_grads, g_grads = function(*engine.inputs(batch))
    grads = engine.grads_to_canonical(gan, "D", d_grads) | engine.grads_to_canonical(gan, "G", g_grads)
    losses = {"D_real": float(errD_real), "D_fake": float(errD_fake), "G": float(errG)}
    return losses, grads


class KerasTensorflowEngine(KerasEngine):
    id = "keras-tensorflow"
    keras = keras
    packages = ("keras", "tensorflow")

    def setup(self, dtype: str, threads: int = 1) -> None:
        one_thread(threads)
        super().setup(dtype, threads)

    def threads(self):
        return {"tensorflow intra-op": tf.config.threading.get_intra_op_parallelism_threads(),
                "tensorflow inter-op": tf.config.threading.get_inter_op_parallelism_threads()}

    iteration = tape_iteration


ENGINE = KerasTensorflowEngine()
