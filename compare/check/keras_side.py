"""A Keras side of a check, in that Keras engine's own process (no torch, except on keras-torch):
the user's Keras pair, loaded with the reference's weights through the port, through every stage."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

import numpy as np

from compare import port
from compare.check import diagnose
from compare.check.pairfile import Pair, PairError, built_pair
from compare.check.stages import channels_first, channels_last, make_batches, run_stages
from compare.program import bn_estimator_probe

Arrays = Dict[str, np.ndarray]
PASS_THROUGH = ("Flatten", "Reshape", "Permute", "Dropout", "InputLayer", "Activation")


def tensorflow_only_when_loaded() -> None:
    """Keras 3 asks, each time it serialises a configuration, whether TensorFlow can be imported,
    and imports it to answer (about 5 s, on keras-jax and keras-torch, where nothing else
    loads it), only to test values against TensorFlow's types: no value can be of one while
    TensorFlow is not loaded. Here it counts as available once something has loaded it."""
    try:
        from keras.src.utils import module_utils
    except ImportError:  # Keras 2, or a Keras 3 laid out otherwise: nothing to spare
        return
    lazy = getattr(module_utils, "tensorflow", None)
    if type(lazy) is not getattr(module_utils, "LazyModule", None):
        return

    class WhenLoaded(module_utils.LazyModule):
        @property
        def available(self):
            return "tensorflow" in sys.modules and super().available

    lazy.__class__ = WhenLoaded


def quick_draws(engine) -> None:
    """JAX's default threefry, the partitionable one, takes 1.5 to 2.5 s on the CPU to compile
    one draw of a 4-D kernel's shape, 0.2 s in its other form, and Keras compiles one per
    kernel shape as it builds the pair. The port then overwrites every tensor it reaches
    with the reference's values, so the check's keras-jax process draws in the quicker form:
    a Keras draw reaches a compared tensor only where the port leaves a tensor at its initial
    value (itself a cause the check names) or through a random layer, whose draws cannot be
    PyTorch's either."""
    if engine.id == "keras-jax":
        import jax

        jax.config.update("jax_threefry_partitionable", False)


def plain_config(layer) -> dict:
    """A layer's get_config(), JSON values only (what a reader of configurations compares)."""
    try:
        config = layer.get_config()
    except Exception:  # a custom layer without get_config
        return {}
    return {k: v for k, v in config.items() if isinstance(v, (bool, int, float, str, type(None), list))}


def activation_name(layer) -> Optional[str]:
    activation = plain_config(layer).get("activation")
    return activation if isinstance(activation, str) else None


def all_layers(model) -> List:
    """Every leaf layer, nested models flattened, in the model's order."""
    out = []
    for layer in model.layers:
        inner = getattr(layer, "layers", None)
        out.extend(all_layers(layer) if isinstance(inner, list) and inner else [layer])
    return out


def ends_in_sigmoid(model) -> bool:
    """Whether the last layer that computes anything applies a sigmoid."""
    for layer in reversed(all_layers(model)):
        if activation_name(layer) == "sigmoid":
            return True
        if type(layer).__name__ not in PASS_THROUGH:
            return False
    return False


def canonical_step(engine, gan, real, z, y_real, y_fake, step: bool):
    """The canonical iteration in the engine's own idiom (the parity runs' code): the three
    losses and D's and G's gradients, in trainable_weights order."""
    if engine.id == "keras-jax":
        from compare.engines.keras_jax.engine import build_optimizers, state_of, stepping, variable_groups

        build_optimizers(gan)
        state, losses, d_grads, g_grads = stepping(jitted_step(gan), step)(state_of(gan), real, z, y_real, y_fake)
        for group, values in zip(variable_groups(gan), state):
            for variable, value in zip(group, values):
                variable.assign(value)
        return losses, d_grads, g_grads
    if engine.id == "keras-torch":
        from compare.engines.keras_torch.engine import torch_step

        *losses, d_grads, g_grads = torch_step(gan, real, z, y_real, y_fake, step=step, keep_d_grads=True)
        return losses, d_grads, g_grads
    from compare.engines.keras_tensorflow.engine import tape_step

    *losses, d_grads, g_grads = tape_step(gan, real, z, y_real, y_fake, step=step)
    return losses, d_grads, g_grads


JITTED = {}  # (G, D) -> the compiled iteration


def jitted_step(gan):
    """keras-jax's canonical iteration compiled with jax.jit, as JAX users run it: once per
    (G, D) in the process, with whether to step as an argument (one program, compiled once,
    for the gradients stage and the iterations). Every reset builds the same optimizers
    afresh, and the iteration is a pure function of the state passed in (optimizer variables
    included), so the program traced with the first reset's optimizers is the one every
    reset runs."""
    key = (id(gan.G), id(gan.D))
    if key not in JITTED:
        from compare.engines.keras_jax.engine import compiled_step

        JITTED[key] = compiled_step(gan)
    return JITTED[key]


def slot_index(optimizer, variable) -> Optional[int]:
    """Where Adam keeps ``variable``'s moments: Keras 3 and Keras 2 index them differently."""
    if hasattr(optimizer, "_get_variable_index"):
        return optimizer._get_variable_index(variable)
    index = getattr(optimizer, "_index_dict", None)
    return index.get(optimizer._var_key(variable)) if index is not None else None


class KerasSide:
    """Built in two steps: the user's pair first (while the reference runs), then ``attach``
    with the reference's tensor specs and starting weights."""

    def __init__(self, engine, pair: Pair, dtype: str, iterations: int):
        self.engine, self.keras, self.pair, self.iterations = engine, engine.keras, pair, iterations
        self.dtype = dtype
        what = pair.build_keras(self.keras)
        self.G, self.D = built_pair(pair.path, what, "keras")
        for net in ("G", "D"):
            model = self.model(net)
            if not hasattr(model, "layers") or not callable(model):
                raise PairError(f"{pair.path}: build_keras(keras) must return Keras models; {net} is a "
                                f"{type(model).__name__}")
        self.loss_kind = pair.d_output["keras"] or ("probabilities" if ends_in_sigmoid(self.D) else "logits")
        self.batches = make_batches(pair.latent_shape, pair.image_shape, pair.batch, iterations)

    def attach(self, ref_facts: dict, weights: Arrays) -> None:
        """Pair each reference tensor with its Keras variable, and keep the weights to load."""
        pair = self.pair
        try:
            self.specs = {net: port.with_layouts([port.TensorSpec.from_json(s) for s in v], pair.layouts.get(net))
                          for net, v in ref_facts["specs"].items()}
        except port.PortError as exc:
            raise PairError(f"{pair.path}: {exc}")
        self.weights = weights
        self.assignment = {}
        for net in ("G", "D"):
            try:
                self.assignment[net] = port.keras_assignment(self.specs[net], self.model(net), pair.overrides.get(net))
            except port.PortError as exc:
                raise PairError(f"{pair.path}: {exc}")
        self.keras_layer_of = {f"{s.net}.{s.layer}": self.assignment[s.net][s.name][0]
                               for net in ("G", "D") for s in self.specs[net]}
        self.types = {f"{s.net}.{s.layer}": s.layer_type for net in ("G", "D") for s in self.specs[net]}
        self.probes = {net: self.probe_model(net) for net in ("G", "D")}

    def model(self, net: str):
        return self.G if net == "G" else self.D

    def probe_model(self, net: str):
        """A model with the same layers whose outputs are every paired top-level layer's and the
        net's own, or None where the model's graph cannot be read (a subclassed model)."""
        model = self.model(net)
        # a nested model that holds one paired layer (a conv with its explicit padding or crop)
        # stands for that layer: its output is the layer's, as torch computes it; a layer with
        # its activation fused in (Dense(..., activation="tanh")) outputs what the torch module
        # after it does: its own output has no torch counterpart
        paths = {k: path for k, path in self.keras_layer_of.items() if k.startswith(net + ".")}
        top = {k: path.split("/")[0] for k, path in paths.items()}
        holders = list(top.values())
        names = [k for k, path in paths.items() if holders.count(top[k]) == 1
                 and activation_name(port.keras_layer(model, path)) in (None, "linear")]
        try:
            outputs = [model.get_layer(top[k]).output for k in names]
            return names, self.keras.Model(model.inputs, outputs + list(model.outputs))
        except Exception:
            return [], None

    def export(self) -> Arrays:
        return {name: value for net in ("G", "D")
                for name, value in port.keras_export(self.model(net), self.specs[net], self.assignment[net]).items()}

    def reset(self) -> SimpleNamespace:
        for net in ("G", "D"):
            port.keras_load(self.model(net), self.specs[net], self.assignment[net], self.weights)
        settings = self.pair.optimizer["keras"]

        def adam():
            return self.keras.optimizers.Adam(learning_rate=settings["lr"], beta_1=settings["beta_1"],
                                              beta_2=settings["beta_2"], epsilon=settings["eps"])

        loss = self.keras.losses.BinaryCrossentropy(from_logits=self.loss_kind == "logits")
        return SimpleNamespace(G=self.G, D=self.D, loss=loss, optimizer_G=adam(), optimizer_D=adam())

    def split(self, prefix: str, nets=("G", "D")) -> Arrays:
        values = self.export()
        return {f"{prefix}/{s.kind}/{s.name}": values[s.name] for net in nets for s in self.specs[net]}

    def names_by_variable(self, net: str) -> Dict[int, port.TensorSpec]:
        model = self.model(net)
        return {id(port.keras_variable(model, self.assignment[net], s.name)): s for s in self.specs[net]}

    def grads(self, net: str, grads) -> Arrays:
        specs = self.names_by_variable(net)
        out = {}
        for variable, grad in zip(self.model(net).trainable_weights, grads):
            spec = specs.get(id(variable))
            if spec is not None and grad is not None:
                out[spec.name] = port.from_keras(spec, self.engine.numpy(grad))
        return out

    def step(self, gan, batch, step: bool = True):
        e = self.engine
        real, z = e.tensor(channels_last(batch["real"])), e.tensor(channels_last(batch["z"]))
        if not hasattr(self, "label_shape"):  # D's output shape, read once in inference mode
            self.label_shape = tuple(self.D(real, training=False).shape)
        y_real, y_fake = e.tensor(np.ones(self.label_shape)), e.tensor(np.zeros(self.label_shape))
        if step and self.pair.train_step_keras is not None:
            with diagnose.recording((gan.G, gan.D)):  # what training= the user's step passes
                losses = self.pair.train_step_keras(self.keras, gan.G, gan.D, gan.optimizer_G, gan.optimizer_D,
                                                    gan.loss, real, z)
            return {k: float(e.numpy(v)) for k, v in losses.items()}, {}
        losses, d_grads, g_grads = canonical_step(e, gan, real, z, y_real, y_fake, step)
        values = {k: float(e.numpy(v)) for k, v in zip(("D_real", "D_fake", "G"), losses)}
        return values, {**self.grads("D", d_grads), **self.grads("G", g_grads)}

    def optimizer_state(self, gan, prefix: str) -> Arrays:
        out = {}
        for net, optimizer in (("G", gan.optimizer_G), ("D", gan.optimizer_D)):
            specs = self.names_by_variable(net)
            for variable in self.model(net).trainable_weights:
                spec = specs.get(id(variable))
                try:
                    index = slot_index(optimizer, variable)
                    slots = (("m", optimizer._momentums[index]), ("v", optimizer._velocities[index]))
                except Exception:  # an optimizer that keeps its moments elsewhere: not compared
                    continue
                for name, slot in slots:
                    if spec is not None:
                        out[f"{prefix}/optimizer/{spec.name}.{name}"] = port.from_keras(
                            spec, self.engine.numpy(slot))
        return out

    def layer_outputs(self, net: str, x: np.ndarray, training: bool) -> Arrays:
        names, probe = self.probes[net]
        tensor = self.engine.tensor(channels_last(x))
        if probe is None:
            return {net: channels_first(self.engine.numpy(self.model(net)(tensor, training=training)))}
        values = probe(tensor, training=training)
        values = values if isinstance(values, (list, tuple)) else [values]
        out = {k: channels_first(self.engine.numpy(v), self.types[k]) for k, v in zip(names, values)}
        out[net] = channels_first(self.engine.numpy(values[-1]))
        return out

    def run(self, progress: Callable[[str], None]) -> Arrays:
        return run_stages(self, self.batches, self.iterations, progress)

    def record(self, stage: str, arrays: Arrays, clear: bool = False) -> None:
        """Nothing: the batch variances the BN rule replays are the reference's."""

    def flat_estimator(self) -> str:
        """The variance a fresh BatchNormalization keeps after one 2-D batch (Keras 2 takes
        another code path for 2-D inputs than for images, so it is measured apart)."""
        from compare.check.diagnose import estimator, probe_batch

        x = probe_batch(3, 2)
        bn = self.keras.layers.BatchNormalization(momentum=0.0)
        bn(self.engine.tensor(x), training=True)
        return estimator(np.array(bn.moving_variance.numpy(), dtype=np.float64), x.astype(self.dtype))

    def own_facts(self) -> dict:
        """Each layer's configuration, the loss, the optimizer, and the dtypes and precision
        facts the float64 rule reads (measured here, never assumed): nothing of the reference's."""
        e = self.engine
        z = e.tensor(channels_last(self.batches[0]["z"]))
        return {
            "layers": {net: [{"name": layer.name, "type": type(layer).__name__, "config": plain_config(layer)}
                             for layer in all_layers(self.model(net))] for net in ("G", "D")},
            "loss": self.loss_kind,
            "optimizer": self.pair.optimizer["keras"],
            "bn_estimator": bn_estimator_probe(e),
            "bn_estimator_2d": self.flat_estimator(),
            "precision_probes": e.precision_probes(),
            "dtypes": {"variables": sorted({str(v.dtype) for n in "GD" for v in self.model(n).weights}),
                       "G output": str(self.G(z, training=False).dtype)},
        }

    def facts(self) -> dict:
        """The pairing, and which nets' layer outputs could be read."""
        return {"keras_layers": self.keras_layer_of,
                "layer_outputs": {net: bool(self.probes[net][1] is not None) for net in ("G", "D")}}
