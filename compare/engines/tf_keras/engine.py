"""Keras 2 through the ``tf_keras`` package: the same tape step as Keras 3 on TensorFlow."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from compare.engines.keras_tensorflow.engine import KerasTensorflowEngine


class TfKerasEngine(KerasTensorflowEngine):
    """Keras 3 on TensorFlow's engine with the Keras 2 module: setup and the tape iteration
    are the same code."""

    id = "tf-keras"
    keras = tf_keras
    packages = ("tf_keras", "tensorflow")

    def tensor(self, x: np.ndarray):  # Keras 2 has no keras.ops
        return tf.convert_to_tensor(x.astype(self.dtype))

    def numpy(self, x) -> np.ndarray:
        return np.array(x.numpy(), dtype=np.float64)

    def precision_probes(self):
        return {"tf.cast(0.999, tf.float64) - 0.999": float(tf.cast(0.999, tf.float64).numpy()) - 0.999}


ENGINE = TfKerasEngine()
