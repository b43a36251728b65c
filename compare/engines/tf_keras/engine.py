"""Keras 2 through the ``tf_keras`` package: the same tape step as Keras 3 on TensorFlow."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from compare.engines.keras_common.engine import KerasEngine
from compare.engines.keras_tensorflow.engine import tape_iteration


class TfKerasEngine(KerasEngine):
    id = "tf-keras"
    keras = tf_keras
    packages = ("tf_keras", "tensorflow")

    def setup(self, dtype: str) -> None:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        super().setup(dtype)

    def tensor(self, x: np.ndarray):  # Keras 2 has no keras.ops
        return tf.convert_to_tensor(x.astype(self.dtype))

    def numpy(self, x) -> np.ndarray:
        return np.array(x.numpy(), dtype=np.float64)

    def precision_probes(self):
        return {"tf.cast(0.999, tf.float64) - 0.999": float(tf.cast(0.999, tf.float64).numpy()) - 0.999}

    iteration = tape_iteration


ENGINE = TfKerasEngine()
