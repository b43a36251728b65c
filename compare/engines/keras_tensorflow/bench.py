"""Keras 3 on TensorFlow in ``compare bench``: the custom step is the engine's persistent
GradientTape iteration wrapped in tf.function, as the Keras guides wrap a custom step."""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from compare.engines.keras_common.bench import KerasBench


def setup_tensorflow(device: str) -> Optional[str]:
    """One thread (as the engines); on CUDA, full float32 (no TF32). The reason the device
    cannot be used, or None."""
    from compare.engines.keras_tensorflow.engine import one_thread

    one_thread()
    if device == "cuda":
        if not tf.config.list_physical_devices("GPU"):
            return f"tensorflow {tf.__version__} sees no GPU (a tensorflow-cpu build?)"
        tf.config.experimental.enable_tensor_float_32_execution(False)
    return None


def tape_step(gan):
    """Shared with tf-keras: the parity runs' canonical tape iteration, compiled with tf.function."""
    from compare.engines.keras_tensorflow.engine import compiled_tape_step

    step = compiled_tape_step(gan)
    return lambda: step(gan.real, gan.z, gan.y_real, gan.y_fake)[2]


def tensorflow_gpu_memory() -> tuple:
    """(reset, read) over TensorFlow's GPU allocator: read gives (peak, at reset) bytes."""
    state = {}

    def reset():
        tf.config.experimental.reset_memory_stats("GPU:0")
        state["base"] = tf.config.experimental.get_memory_info("GPU:0")["current"]

    def read():
        return tf.config.experimental.get_memory_info("GPU:0")["peak"], state["base"]

    return reset, read


class KerasTensorflowBench(KerasBench):
    keras = keras
    packages = ("keras", "tensorflow")
    custom_wrap = "tf.function"

    def setup(self, device: str) -> Optional[str]:
        return setup_tensorflow(device)

    def custom_step(self, gan):
        return tape_step(gan)

    def gpu_memory(self):
        return tensorflow_gpu_memory()


BENCH = KerasTensorflowBench()
