"""The Keras half of the port test, run in a Keras engine's own process: it imports no torch."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from compare import port
from compare.engines import ENGINES


def keras_pair(keras):
    """MixedG and mixed_d written as a Keras user ports them (NHWC, Flatten of NHWC)."""
    layers = keras.layers
    g = keras.Sequential([
        keras.Input((5,)), layers.Dense(32, name="fc"), layers.BatchNormalization(epsilon=1e-5, name="bn"), layers.ReLU(),
        layers.Reshape((8, 2, 2)), layers.Permute((2, 3, 1)),  # torch's view is NCHW
        layers.Conv2DTranspose(3, 4, 2, padding="same", name="up"), layers.Activation("tanh"),
    ], name="G")
    d = keras.Sequential([
        keras.Input((4, 4, 3)), layers.ZeroPadding2D(1), layers.Conv2D(4, 3, 2, name="conv"),
        layers.BatchNormalization(epsilon=1e-5, name="bn"), layers.LeakyReLU(0.2), layers.Flatten(),
        layers.Dense(8, name="fc"), layers.LayerNormalization(epsilon=1e-5, name="norm"),
        layers.Dense(1, name="head"),
    ], name="D")
    return g, d


def keras_side(folder: str, builder: str = "compare.tests.port_child:keras_pair", **kwargs) -> None:
    """In the engine's process: build the pair with ``builder`` ("module:function", called with
    the keras module and ``kwargs``), port the parent's arrays in, export them back, and run both nets."""
    import importlib

    spec = ENGINES[os.environ["COMPARE_ENGINE"]]
    keras = importlib.import_module(spec.module).ENGINE.keras
    keras.backend.set_floatx("float32")
    with open(os.path.join(folder, "specs.json")) as f:
        specs = {net: [port.TensorSpec.from_json(s) for s in v] for net, v in json.load(f).items()}
    arrays = dict(np.load(os.path.join(folder, "in.npz")))
    out = {}
    module, function = builder.split(":")
    pair = getattr(importlib.import_module(module), function)(keras, **kwargs)
    for model, net in zip(pair, "GD"):
        x = arrays[f"x.{net}"]
        x = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x  # images and latents: NCHW -> NHWC
        assignment = port.keras_assignment(specs[net], model)
        port.keras_load(model, specs[net], assignment, arrays)
        out.update({f"port.{k}": v for k, v in port.keras_export(model, specs[net], assignment).items()})
        y = model(x.astype("float32"), training=False)
        y = keras.ops.convert_to_numpy(y) if hasattr(keras, "ops") else y.numpy()  # Keras 2 has no ops
        out[f"y.{net}"] = y.transpose(0, 3, 1, 2) if y.ndim == 4 else y
    out["torch imported"] = np.array(["torch" in sys.modules])
    np.savez(os.path.join(folder, "out.npz"), **out)
