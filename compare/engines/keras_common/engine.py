"""What Keras 3 (any backend) and Keras 2 (``tf_keras``) share: the toy GAN as Keras
Sequential models, the weight port, forward passes and the BN probe.

A backend engine subclasses ``KerasEngine`` and writes only its gradient step, in its
own idiom (GradientTape, jax.value_and_grad over stateless_call, torch backward).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Dict

import numpy as np

from compare.engines.base import Arrays, Engine
from compare.model import Config, adam_epsilon, bn_settings

# canonical (out, in, kh, kw) and transpose (in, out, kh, kw) kernels -> Keras (kh, kw, in, out)
# and (kh, kw, out, in): the same axis permutation serves both.
TO_KERAS_KERNEL = (2, 3, 1, 0)
FROM_KERAS_KERNEL = (3, 2, 0, 1)


def build_generator(keras, config: Config):
    layers = keras.layers
    momentum, eps = bn_settings(config, "keras")
    return keras.Sequential([
        keras.Input(shape=(1, 1, 100)),
        layers.Conv2DTranspose(64, 6, strides=1, use_bias=config.bias_before_bn, name="deconv"),  # 1x1 -> 6x6
        layers.BatchNormalization(momentum=momentum, epsilon=eps, name="bn"),
        layers.ReLU(),
        layers.Conv2D(3, 3, padding="same", name="conv"),  # stride 1, odd kernel: 'same' is symmetric
        layers.Activation("tanh"),
    ], name="G")


def build_discriminator(keras, config: Config):
    layers = keras.layers
    momentum, eps = bn_settings(config, "keras")
    if config.padding == "explicit":
        # PyTorch's padding=1: one zero row/column on every side, then a 'valid' conv
        conv1 = [layers.ZeroPadding2D(1), layers.Conv2D(32, 3, strides=2, padding="valid",
                                                        use_bias=config.bias_before_bn, name="conv1")]
    else:
        # 'same' with stride 2 on an even size pads only bottom/right: shifted outputs
        conv1 = [layers.Conv2D(32, 3, strides=2, padding="same", use_bias=config.bias_before_bn, name="conv1")]
    tail = [layers.Activation("sigmoid")] if config.output == "sigmoid" else []
    return keras.Sequential([
        keras.Input(shape=(6, 6, 3)),
        *conv1,  # 6x6 -> 3x3
        layers.BatchNormalization(momentum=momentum, epsilon=eps, name="bn"),
        layers.ReLU(),
        layers.AveragePooling2D(3),  # 3x3 -> 1x1
        layers.Conv2D(1, 1, name="conv2"),
        *tail,
        layers.Flatten(),
    ], name="D")


class KerasGan:
    def __init__(self, keras, config: Config):
        self.config = config
        self.G = build_generator(keras, config)
        self.D = build_discriminator(keras, config)
        kwargs = dict(learning_rate=config.lr, beta_1=config.beta_1, beta_2=config.beta_2,
                      epsilon=adam_epsilon(config, "keras"))
        self.optimizer_G = keras.optimizers.Adam(**kwargs)
        self.optimizer_D = keras.optimizers.Adam(**kwargs)
        self.loss = keras.losses.BinaryCrossentropy(from_logits=config.output == "logits")

    def model(self, net: str):
        return self.G if net == "G" else self.D


def keras_variable(gan: KerasGan, canonical: str):
    net, layer, tensor = canonical.split(".")
    return getattr(gan.model(net).get_layer(layer), tensor)


def to_keras(canonical: str, value: np.ndarray) -> np.ndarray:
    return value.transpose(TO_KERAS_KERNEL) if canonical.endswith(".kernel") else value


def from_keras(canonical: str, value: np.ndarray) -> np.ndarray:
    return value.transpose(FROM_KERAS_KERNEL) if canonical.endswith(".kernel") else value


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
        return {name: importlib.metadata.version(name) for name in self.packages} | {"numpy": np.__version__}

    def build(self, config: Config, weights: Arrays) -> KerasGan:
        gan = KerasGan(self.keras, config)
        for name, value in weights.items():
            variable = keras_variable(gan, name)
            variable.assign(to_keras(name, value).astype(self.dtype))
        return gan

    def canonical_variables(self, gan: KerasGan):
        """(canonical name, variable) for every variable of G and D."""
        for net in ("G", "D"):
            for layer in gan.model(net).layers:
                for variable in layer.weights:
                    tensor = variable.name.split("/")[-1].split(":")[0]
                    yield f"{net}.{layer.name}.{tensor}", variable

    def export(self, gan: KerasGan) -> Arrays:
        return {name: from_keras(name, np.array(v.numpy(), dtype=np.float64))
                for name, v in self.canonical_variables(gan)}

    def trainable(self, gan: KerasGan) -> Dict[str, tuple]:
        ids = {id(v) for net in ("G", "D") for v in gan.model(net).trainable_weights}
        return {name: tuple(from_keras(name, np.zeros(tuple(v.shape))).shape)
                for name, v in self.canonical_variables(gan) if id(v) in ids}

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
        names = {id(v): name for name, v in self.canonical_variables(gan)}
        return {names[id(v)]: from_keras(names[id(v)], self.numpy(g))
                for v, g in zip(gan.model(net).trainable_weights, grads)}
