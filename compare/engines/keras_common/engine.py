"""What Keras 3 (any backend) and Keras 2 (``tf_keras``) share: the toy GAN's Keras models
(``compare.models.toy``) ported through ``compare.port``, forward passes and the BN probe.

A backend engine subclasses ``KerasEngine`` and writes only its gradient step, in its
own idiom (GradientTape, jax.value_and_grad over stateless_call, torch backward).
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from compare import port
from compare.engines import distribution_version
from compare.engines.base import Arrays, Engine
from compare.models import toy
from compare.models.toy import Config, adam_epsilon, builder_args


class KerasGan:
    def __init__(self, keras, config: Config):
        self.config = config
        self.G, self.D = toy.build_keras(keras, **builder_args(config, "keras"))
        specs = toy.specs(config)
        self.specs = {net: [s for s in specs if s.net == net] for net in ("G", "D")}
        self.assignment = {net: port.keras_assignment(self.specs[net], self.model(net)) for net in ("G", "D")}
        # (spec, Keras variable) for every ported tensor of G and D, in spec order
        self.variables = [(spec, port.keras_variable(self.model(net), self.assignment[net], spec.name))
                          for net in ("G", "D") for spec in self.specs[net]]
        kwargs = dict(learning_rate=config.lr, beta_1=config.beta_1, beta_2=config.beta_2,
                      epsilon=adam_epsilon(config, "keras"))
        self.optimizer_G = keras.optimizers.Adam(**kwargs)
        self.optimizer_D = keras.optimizers.Adam(**kwargs)
        self.loss = keras.losses.BinaryCrossentropy(from_logits=config.output == "logits")

    def model(self, net: str):
        return self.G if net == "G" else self.D


def to_nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1)


def to_nchw(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x


def build_optimizers(gan: KerasGan) -> None:
    """A compiled or stateless step needs the optimizers' variables to exist before it is
    traced (Keras 3 says ``built``, Keras 2 ``_built``)."""
    for optimizer, model in ((gan.optimizer_D, gan.D), (gan.optimizer_G, gan.G)):
        if not getattr(optimizer, "built", getattr(optimizer, "_built", False)):
            optimizer.build(model.trainable_variables)


class KerasEngine(Engine):
    """Shared by every Keras engine. ``keras`` is the Keras 3 or the ``tf_keras`` module."""

    keras: Any = None
    packages = ("keras",)

    def set_floatx(self, dtype: str) -> None:
        self.keras.backend.set_floatx(dtype)

    def setup(self, dtype: str, threads: int = 1) -> None:
        self.dtype = dtype
        self.set_floatx(dtype)

    def versions(self) -> Dict[str, str]:
        return {name: distribution_version(name) for name in self.packages} | {"numpy": np.__version__}

    def build(self, config: Config, weights: Arrays) -> KerasGan:
        gan = KerasGan(self.keras, config)
        for net in ("G", "D"):
            port.keras_load(gan.model(net), gan.specs[net], gan.assignment[net], weights)
        return gan

    def export(self, gan: KerasGan) -> Arrays:
        return {name: value for net in ("G", "D")
                for name, value in port.keras_export(gan.model(net), gan.specs[net], gan.assignment[net]).items()}

    def trainable(self, gan: KerasGan) -> Dict[str, tuple]:
        ids = {id(v) for net in ("G", "D") for v in gan.model(net).trainable_weights}
        return {spec.name: spec.shape for spec, v in gan.variables if id(v) in ids}

    def inputs(self, batch: Arrays):
        """Real images (NHWC), latent vectors and labels as the backend's tensors."""
        ops = self.tensor
        n = batch["real"].shape[0]
        return (ops(to_nhwc(batch["real"])), ops(to_nhwc(batch["z"])),
                ops(np.ones((n, 1))), ops(np.zeros((n, 1))))

    def tensor(self, x: np.ndarray):
        return self.keras.ops.convert_to_tensor(x.astype(self.dtype))

    def numpy(self, x) -> np.ndarray:
        return np.array(self.keras.ops.convert_to_numpy(x), dtype=np.float64)

    def forward(self, gan: KerasGan, net: str, x: np.ndarray, training: bool) -> np.ndarray:
        out = gan.model(net)(self.tensor(to_nhwc(x)), training=training)
        return to_nchw(self.numpy(out))

    def bn_probe(self, x: np.ndarray) -> np.ndarray:
        bn = self.keras.layers.BatchNormalization(momentum=0.0)  # new = batch statistic
        bn(self.tensor(to_nhwc(x)), training=True)
        return np.array(bn.moving_variance.numpy(), dtype=np.float64)

    def precision_probes(self) -> Dict[str, Any]:
        ops = self.keras.ops
        x = ops.convert_to_tensor(np.linspace(-2.0, 2.0, 7))
        return {
            "keras.backend.result_type('float64', 'float32')": self.keras.backend.result_type("float64", "float32"),
            "keras.ops.tanh(float64 tensor).dtype": str(ops.tanh(x).dtype),
            "keras.ops.cast(0.999, 'float64') - 0.999": float(ops.convert_to_numpy(ops.cast(0.999, "float64"))) - 0.999,
        }

    def computed_dtypes(self, gan: KerasGan, batch: Arrays) -> Dict[str, str]:
        _, z, _, _ = self.inputs(batch)
        fake = gan.G(z, training=True)
        return {
            "variables": ",".join(sorted({str(v.dtype) for n in "GD" for v in gan.model(n).weights})),
            "G output": str(fake.dtype),
            "D output": str(gan.D(fake, training=True).dtype),
        }

    def grads_to_canonical(self, gan: KerasGan, net: str, grads) -> Arrays:
        specs = {id(v): spec for spec, v in gan.variables}
        return {specs[id(v)].name: port.from_keras(specs[id(v)], self.numpy(g))
                for v, g in zip(gan.model(net).trainable_weights, grads)}
