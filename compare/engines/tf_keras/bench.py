"""Keras 2 (tf_keras) in ``compare bench``: the same tf.function tape step as Keras 3 on
TensorFlow; only the Keras module differs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from compare.engines.keras_common.bench import KerasBench
from compare.engines.keras_tensorflow.bench import setup_tensorflow, tape_step, tensorflow_gpu_memory


class TfKerasBench(KerasBench):
    keras = tf_keras
    packages = ("tf_keras", "tensorflow")
    custom_wrap = "tf.function"

    def setup(self, device):
        return setup_tensorflow(device)

    def tensor(self, x: np.ndarray):  # Keras 2 has no keras.ops
        return tf.convert_to_tensor(x.astype("float32"))

    def custom_step(self, gan):
        return tape_step(gan)

    def gpu_memory(self):
        return tensorflow_gpu_memory()


BENCH = TfKerasBench()
