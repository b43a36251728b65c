"""The known causes of a divergence between a PyTorch GAN and its Keras port.

Each cause is data plus small functions:

- ``read_torch(pair, context)`` and ``read_keras(pair, keras, context)`` read the settings
  the cause depends on from the built networks (module attributes on the torch side,
  ``get_config()`` on the Keras side, the optimizer settings, measured dtypes), as JSON;
  the torch half runs where torch is, and travels to a Keras process as JSON;
- ``suspect(torch, keras, context)`` says whether the two readings differ in a way that can
  move a training step;
- ``switch(source, seen)`` gives a copy of the pair's source (FILE.py's module: see
  ``compare.check.pairfile``) with that one cause switched off, from the reading ``seen``:
  new builders, or new ``OPTIMIZER``, ``D_OUTPUT`` or ``DTYPE`` settings. The check runs it
  again; only that run can confirm the cause. ``switch`` gives the same copy in every
  process, so a Keras process and the torch process build the two halves of one
  counterfactual pair from the same reading.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from compare.check import surgery
from compare.check.surgery import NETS, KERAS_CONV, KERAS_SHAPE_ONLY, TORCH_BN, TORCH_CONV, TORCH_SHAPE_ONLY

Reading = Dict[str, Any]
ADAM_KEYS = ("lr", "beta_1", "beta_2", "eps")
CONSTANTS = ("lr", "beta_1", "beta_2")
# An epsilon this small changes no step, wherever it is added (sqrt(v) is far larger).
NEGLIGIBLE_EPS = 1e-20


@dataclasses.dataclass(frozen=True)
class Context:
    """What a reading needs besides the networks: shapes (PyTorch layout), the dtype the
    check runs in, and the pair's Adam settings and D's output ("logits" or "probabilities";
    None: read from the networks) per framework."""

    latent_shape: Tuple[int, ...]
    image_shape: Tuple[int, ...]
    dtype: str = "float32"
    optimizer: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    d_output: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
    layouts: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)  # the pair's LAYOUTS
    batch: int = 4  # the check's: a reading that runs the nets reuses what the stages compiled

    @classmethod
    def of(cls, pair, dtype: str = "float32") -> "Context":
        return cls(tuple(pair.latent_shape), tuple(pair.image_shape), dtype, dict(pair.optimizer), dict(pair.d_output),
                   {net: dict(v) for net, v in pair.layouts.items()}, pair.batch)

    def input_shape(self, net: str) -> Tuple[int, ...]:
        return self.latent_shape if net == "G" else self.image_shape


@dataclasses.dataclass(frozen=True)
class Cause:
    id: str
    title: str
    read_torch: Callable[[Sequence[Any], Context], Reading]
    read_keras: Callable[[Sequence[Any], Any, Context], Reading]
    suspect: Callable[[Reading, Reading, Context], bool]
    switch_off: Callable[[Any, dict], Any]
    switched: str  # what switching it off does, for "switching X removes the divergence"

    def read(self, torch_pair, keras_pair, keras, context: Context) -> dict:
        """Both sides' settings and whether they make this cause a suspect. ``torch_pair``
        is the (G, D) modules, or their reading (``read_torch``) as JSON from another process."""
        seen_torch = torch_pair if isinstance(torch_pair, dict) else self.read_torch(torch_pair, context)
        seen_keras = self.read_keras(keras_pair, keras, context)
        return {"torch": seen_torch, "keras": seen_keras,
                "suspect": bool(self.suspect(seen_torch, seen_keras, context))}

    def switch(self, source, seen: dict):
        """A copy of ``source`` with this cause switched off, given what ``read`` saw; None where no
        counterfactual can be built."""
        return self.switch_off(source, seen)


def torch_layers(pair, context: Context) -> Dict[str, List[surgery.TorchLayer]]:
    return {net: surgery.torch_layers(module, context.input_shape(net)) for net, module in zip(NETS, pair)}


def keras_layers(pair) -> Dict[str, List[surgery.KerasLayer]]:
    return {net: surgery.keras_layers(model) for net, model in zip(NETS, pair)}


def pairs(seen: dict, net: str):
    """The entries of both readings for ``net``, paired in order."""
    return list(zip(seen["torch"].get(net, []), seen["keras"].get(net, [])))


def by_net(seen_torch: Reading, seen_keras: Reading):
    for net in NETS:
        yield from zip(seen_torch.get(net, []), seen_keras.get(net, []))


def keras_edit(source, changes: Callable[[str], Dict[int, dict]]):
    """A copy of ``source`` whose Keras builder rebuilds each net with ``changes(net)`` (position among
    the leaf layers -> config values)."""
    def edit(net, model, keras):
        wanted = changes(net)
        return surgery.rebuild_layers(model, keras, wanted) if wanted else model
    return surgery.derive(source, build_keras=surgery.keras_builder(source, edit))


# --- BatchNorm: momentum, epsilon, variance estimator

def torch_bn(pair, context: Context) -> Reading:
    return {net: [{"layer": l.path, "momentum": l.module.momentum, "eps": l.module.eps,
                   "tracks_running_stats": bool(l.module.track_running_stats)}
                  for l in layers if l.type in TORCH_BN]
            for net, layers in torch_layers(pair, context).items()}


def keras_bn(pair, keras, context: Context) -> Reading:
    return {net: [{"layer": l.path, "index": l.index, "momentum": l.config["momentum"], "epsilon": l.config["epsilon"]}
                  for l in layers if l.type == "BatchNormalization"]
            for net, layers in keras_layers(pair).items()}


def momentum_differs(t: Reading, k: Reading, context: Context) -> bool:
    # PyTorch weights the new batch by its momentum, Keras the old average by its own
    return any(a["momentum"] is None or b["momentum"] != 1 - a["momentum"] for a, b in by_net(t, k))


def epsilon_differs(t: Reading, k: Reading, context: Context) -> bool:
    return any(a["eps"] != b["epsilon"] for a, b in by_net(t, k))


def keras_bn_matching(key: str, value: Callable[[dict], Any]):
    """A switch that gives each Keras BN ``value`` of its torch counterpart as ``key``
    (a torch BN with a cumulative average, momentum None, has no Keras counterpart)."""
    def switch(source, seen):
        return keras_edit(source, lambda net: {b["index"]: {key: value(a)} for a, b in pairs(seen, net)
                                               if a["momentum"] is not None})
    return switch


def torch_estimator(pair, context: Context) -> Reading:
    """Which variance the pair's first BN layer keeps after one training batch: a copy of
    it (its hooks too), with the new batch weighted fully, on a probe batch."""
    torch = sys.modules["torch"]
    reading = torch_bn(pair, context)
    layers = [l for layers in torch_layers(pair, context).values() for l in layers if l.type in TORCH_BN]
    if layers:
        bn = copy.deepcopy(layers[0].module).double().train()
        bn.momentum = 1.0
        bn.reset_running_stats()
        x = probe_batch(bn.num_features, len(layers[0].input))
        with torch.no_grad():
            bn(torch.as_tensor(x))
        reading["estimator"] = estimator(bn.running_var.numpy(), x)
    return reading


def keras_estimator(pair, keras, context: Context) -> Reading:
    reading = keras_bn(pair, keras, context)
    layers = [l for layers in keras_layers(pair).values() for l in layers if l.type == "BatchNormalization"]
    if layers:
        config = {**layers[0].config, "momentum": 0.0, "dtype": "float64"}
        for key in ("name", "axis"):  # the probe batch has its channels last, on axis -1
            config.pop(key, None)
        bn = type(layers[0].layer).from_config(config)
        x = probe_batch(3, 2)
        bn(x, training=True)
        reading["estimator"] = estimator(np.array(bn.moving_variance.numpy(), dtype=np.float64), x)
    return reading


def probe_batch(channels: int, rank: int) -> np.ndarray:
    """A batch of 8 with ``channels`` channels (on axis 1: NCHW for torch; rank 2 is the same
    in both layouts), of known variance."""
    shape = (8, channels) + (2,) * (rank - 2)
    return np.random.default_rng(7).standard_normal(shape) * 2.0 + 0.5


def estimator(kept: np.ndarray, x: np.ndarray) -> str:
    axes = tuple(a for a in range(x.ndim) if a != 1)
    biased = np.max(np.abs(kept - x.var(axis=axes)))
    unbiased = np.max(np.abs(kept - x.var(axis=axes, ddof=1)))
    return "biased" if biased < unbiased else "unbiased"


def estimators_differ(t: Reading, k: Reading, context: Context) -> bool:
    trained = any(a["momentum"] != 0 and a["tracks_running_stats"] for a, _ in by_net(t, k))
    return trained and t.get("estimator") != k.get("estimator")


def keep_biased_variance(bn) -> None:
    """Make a torch BN layer store the biased batch variance, as Keras does: its own update
    runs, then running_var is recomputed from the value it had before."""
    torch = sys.modules["torch"]
    saved = {}

    def before(module, inputs):
        if module.training and module.momentum is not None:
            saved["old"] = module.running_var.detach().clone()

    def after(module, inputs, output):
        old = saved.pop("old", None)
        if old is None:
            return
        x = inputs[0].detach()
        dims = [d for d in range(x.dim()) if d != 1]
        # through .data: BN's backward has the buffer among its inputs (unused in training)
        # and would refuse a buffer changed in place
        with torch.no_grad():
            module.running_var.data.copy_(old * (1 - module.momentum) + x.var(dim=dims, unbiased=False) * module.momentum)

    bn.register_forward_pre_hook(before)
    bn.register_forward_hook(after)


def switch_estimator(source, seen):
    layers = {net: {a["layer"] for a, _ in pairs(seen, net)} for net in NETS}

    def edit(net, module):
        for path, sub in module.named_modules():
            if path in layers[net]:
                keep_biased_variance(sub)
    return surgery.derive(source, build_torch=surgery.torch_builder(source, edit))


# --- Adam: epsilon placement, constants

def torch_adam(pair, context: Context) -> Reading:
    return {**context.optimizer["torch"], "epsilon_added": "to sqrt(v) after bias correction"}


def keras_adam(pair, keras, context: Context) -> Reading:
    reading = {**context.optimizer["keras"], "epsilon_added": "to sqrt(v) before bias correction"}
    if context.dtype == "float64":
        # TensorFlow's cast takes a Python float through float32; measured, per backend
        ops = getattr(keras, "ops", None)
        cast = ops.cast if ops is not None else sys.modules["tensorflow"].cast  # Keras 2 is TensorFlow's
        reading["casts_constants_through_float32"] = bool(float(np.asarray(cast(0.999, "float64"))) != 0.999)
    return reading


def epsilon_matters(t: Reading, k: Reading, context: Context) -> bool:
    # where each adds it differs, so only an epsilon too small to matter is safe
    return max(t["eps"], k["eps"]) > NEGLIGIBLE_EPS


def float32_exact(value: float) -> bool:
    return float(np.float32(value)) == value


def constants_differ(t: Reading, k: Reading, context: Context) -> bool:
    if any(t[n] != k[n] for n in CONSTANTS):
        return True
    return bool(k.get("casts_constants_through_float32")) and not all(float32_exact(t[n]) for n in CONSTANTS)


def set_adam(source, seen, change: Callable[[Dict[str, float]], Dict[str, float]]):
    return surgery.derive(source, OPTIMIZER={
        side: change({n: seen[side][n] for n in ADAM_KEYS}) for side in ("torch", "keras")})


def switch_adam_eps(source, seen):
    return set_adam(source, seen, lambda adam: {**adam, "eps": NEGLIGIBLE_EPS})


def switch_adam_constants(source, seen):
    # the torch side's constants, rounded to float32 numbers, on both sides
    return set_adam(source, seen, lambda adam: {**adam, **{n: float(np.float32(seen["torch"][n])) for n in CONSTANTS}})


# --- padding

def torch_convs(pair, context: Context) -> Reading:
    out = {}
    for net, layers in torch_layers(pair, context).items():
        out[net] = [{"layer": l.path, "type": l.type, "kernel": list(l.module.kernel_size),
                     "stride": list(l.module.stride), "dilation": list(l.module.dilation),
                     "padding": padding_of(l.module), "output_padding": list(getattr(l.module, "output_padding", ())),
                     "input": list(l.input[2:])}
                    for l in layers if l.type in TORCH_CONV]
    return out


def padding_of(module) -> Any:
    padding = module.padding
    return padding if isinstance(padding, str) else list(padding)


def keras_convs(pair, keras, context: Context) -> Reading:
    out = {}
    for net, layers in keras_layers(pair).items():
        out[net] = []
        for i, l in enumerate(layers):
            if l.type not in KERAS_CONV:
                continue
            # explicit padding: a ZeroPadding2D just before a conv, a Cropping2D just after a transposed one
            near = layers[i + 1] if l.type == "Conv2DTranspose" and i + 1 < len(layers) else layers[i - 1] if i else None
            explicit = {"ZeroPadding2D": "padding", "Cropping2D": "cropping"}.get(near.type if near else "")
            if explicit == "cropping" and l.type != "Conv2DTranspose" or explicit == "padding" and l.type == "Conv2DTranspose":
                explicit = None
            out[net].append({"layer": l.path, "index": l.index, "type": l.type, "padding": l.config["padding"],
                             "explicit": [list(p) for p in near.config[explicit]] if explicit else None,
                             "kernel": list(l.config["kernel_size"]), "strides": list(l.config["strides"]),
                             "dilation": list(l.config.get("dilation_rate", (1,) * len(l.config["kernel_size"])))})
    return out


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
    """Keras's 'same': the total padding a stride needs, the odd one at the end."""
    span = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def torch_pads(conv: dict) -> List[Tuple[int, int]]:
    """(before, after) per spatial axis: added before a conv, cropped after a transposed one."""
    padding = conv["padding"]
    if padding == "valid":
        return [(0, 0)] * len(conv["kernel"])
    if padding == "same":  # stride 1 only, in torch: the extra one at the end, as in Keras
        return [same_pads(n, k, 1, d) for n, k, d in zip(conv["input"], conv["kernel"], conv["dilation"])]
    extra = conv["output_padding"] or [0] * len(padding)
    return [(p, p - e) for p, e in zip(padding, extra)] if conv["type"] == "ConvTranspose2d" else [(p, p) for p in padding]


def keras_pads(torch_conv: dict, conv: dict) -> List[Tuple[int, int]]:
    """The same, for the Keras conv fed the input size the torch one was fed."""
    if conv["padding"] == "valid":
        return [tuple(p) for p in conv["explicit"]] if conv["explicit"] else [(0, 0)] * len(conv["kernel"])
    if conv["type"] == "Conv2DTranspose":  # 'same' crops what the forward 'same' conv would pad
        return [same_pads(n * s, k, s, d) for n, k, s, d in
                zip(torch_conv["input"], conv["kernel"], conv["strides"], conv["dilation"])]
    return [same_pads(n, k, s, d) for n, k, s, d in
            zip(torch_conv["input"], conv["kernel"], conv["strides"], conv["dilation"])]


def mismatched_convs(seen_torch: Reading, seen_keras: Reading, net: str):
    for a, b in zip(seen_torch.get(net, []), seen_keras.get(net, [])):
        pads = [list(p) for p in keras_pads(a, b)]
        if pads != [list(p) for p in torch_pads(a)]:
            yield a, b


def padding_differs(t: Reading, k: Reading, context: Context) -> bool:
    return any(True for net in NETS for _ in mismatched_convs(t, k, net))


def switch_padding(source, seen):
    """Each Keras conv whose padding differs is given torch's: explicit zero padding, then
    'valid' (a transposed conv: 'valid', then the crop torch's padding makes)."""
    def edit(net, model, keras):
        wanted = surgery.at_positions(model, {b["index"]: torch_pads(a) for a, b in
                                              mismatched_convs(seen["torch"], seen["keras"], net)})
        if not wanted:
            return model
        layers = keras.layers

        def explicit(layer, config):
            if id(layer) not in wanted:
                return None
            pads = tuple(tuple(p) for p in wanted[id(layer)])
            config["padding"] = "valid"
            conv = layer.__class__.from_config(config)
            if type(layer).__name__ == "Conv2DTranspose":
                stack = [conv, layers.Cropping2D(pads, name=f"{layer.name}_crop")]
            else:
                stack = [layers.ZeroPadding2D(pads, name=f"{layer.name}_pad"), conv]
            return keras.Sequential(stack, name=f"{layer.name}_explicit")
        return surgery.clone_keras(model, keras, explicit)
    return surgery.derive(source, build_keras=surgery.keras_builder(source, edit))


# --- a bias before BN

def followed_by_bn(layers, is_bn: Callable[[Any], bool], shape_only: Sequence[str]) -> List[Tuple[Any, Any]]:
    """(layer, the BN it feeds) for each layer whose next layer of any effect is a BN."""
    out = []
    for i, layer in enumerate(layers):
        following = next((l for l in layers[i + 1:] if l.type not in shape_only), None)
        if following is not None and is_bn(following):
            out.append((layer, following))
    return out


def torch_biases(pair, context: Context) -> Reading:
    return {net: [{"layer": l.path, "bn": bn.path}
                  for l, bn in followed_by_bn(layers, lambda l: l.type in TORCH_BN, TORCH_SHAPE_ONLY)
                  if getattr(l.module, "bias", None) is not None]
            for net, layers in torch_layers(pair, context).items()}


def keras_biases(pair, keras, context: Context) -> Reading:
    return {net: [{"layer": l.path, "index": l.index, "bn": bn.path}
                  for l, bn in followed_by_bn(layers, lambda l: l.type == "BatchNormalization", KERAS_SHAPE_ONLY)
                  if l.config.get("use_bias")]
            for net, layers in keras_layers(pair).items()}


def any_bias(t: Reading, k: Reading, context: Context) -> bool:
    return any(t.get(net) or k.get(net) for net in NETS)


def switch_bias(source, seen):
    """The bias removed on both sides: BN's batch mean cancels it in the forward pass, so
    only its gradient (rounding noise) and Adam's step on it change."""
    def torch_edit(net, module):
        for entry in seen["torch"].get(net, []):
            parent, name = surgery.torch_parent(module, entry["layer"])
            getattr(parent, name).register_parameter("bias", None)
    source = surgery.derive(source, build_torch=surgery.torch_builder(source, torch_edit))
    return keras_edit(source, lambda net: {e["index"]: {"use_bias": False}
                                           for e in seen["keras"].get(net, [])})


# --- BCE on probabilities

def torch_output(pair, context: Context) -> Reading:
    layers = [l for l in surgery.torch_layers(pair[1], context.image_shape) if l.type not in TORCH_SHAPE_ONLY]
    last = layers[-1] if layers else None
    sigmoid = last is not None and last.type == "Sigmoid"
    return {"last_layer": last.path if last else None, "sigmoid": sigmoid,
            "loss": context.d_output.get("torch") or ("probabilities" if sigmoid else "logits")}


def keras_output(pair, keras, context: Context) -> Reading:
    layers = [l for l in surgery.keras_layers(pair[1]) if l.type not in KERAS_SHAPE_ONLY]
    last = layers[-1] if layers else None
    sigmoid = last is not None and last.config.get("activation") == "sigmoid"
    return {"last_layer": last.path if last else None, "index": last.index if last else None, "sigmoid": sigmoid,
            "loss": context.d_output.get("keras") or ("probabilities" if sigmoid else "logits")}


def probabilities(t: Reading, k: Reading, context: Context) -> bool:
    # each framework keeps log(p) finite its own way (torch clamps at -100, Keras clips p)
    return "probabilities" in (t["loss"], k["loss"])


def switch_output(source, seen):
    """D's final sigmoid dropped on both sides and BCE taken from logits."""
    def torch_edit(net, module):
        if net == "D" and seen["torch"]["sigmoid"]:
            surgery.replace_torch(module, seen["torch"]["last_layer"], sys.modules["torch"].nn.Identity())
    source = surgery.derive(source, build_torch=surgery.torch_builder(source, torch_edit), D_OUTPUT="logits")
    last = seen["keras"]["index"]
    return keras_edit(source, lambda net: {last: {"activation": "linear"}} if net == "D" and seen["keras"]["sigmoid"] else {})


# --- the Flatten order

def torch_flatten(pair, context: Context) -> Reading:
    """Each Linear fed a flattened 4-D activation: its feature shape, in torch's C, H, W
    order, and the order the port writes the Keras kernel's rows in (H, W, C: NHWC)."""
    out = {}
    for net, layers in torch_layers(pair, context).items():
        out[net] = []
        for i, l in enumerate(layers):
            if l.type != "Linear" or len(l.input) != 2:
                continue
            before = next((p for p in reversed(layers[:i]) if len(p.output) != 2), None)
            if before is not None:
                features = before.output[1:] if len(before.output) == 4 else None
            elif len(context.input_shape(net)) == 3 and all(p.type in TORCH_SHAPE_ONLY for p in layers[:i]):
                features = context.input_shape(net)  # the net's own input, flattened
            else:
                features = None
            if features is not None:  # a "transpose" layout leaves the rows in torch's order
                plain = context.layouts.get(net, {}).get(l.path) == "transpose"
                out[net].append({"layer": l.path, "features": list(features), "order": "CHW",
                                 "ported_as": "CHW" if plain else "HWC"})
    return out


def keras_flatten(pair, keras, context: Context) -> Reading:
    """Each Dense fed by a Flatten: the order that Flatten lays the features out in."""
    out = {}
    for net, layers in keras_layers(pair).items():
        out[net] = []
        for i, l in enumerate(layers):
            if l.type != "Dense" or i == 0 or layers[i - 1].type != "Flatten":
                continue
            flatten = layers[i - 1]
            permute = layers[i - 2] if i >= 2 and layers[i - 2].type == "Permute" else None
            channels_first = flatten.config.get("data_format") == "channels_first"
            moved = permute is not None and tuple(permute.config["dims"]) == (3, 1, 2)
            out[net].append({"layer": l.path, "flatten": flatten.index,
                             "permute": permute.index if permute else None,
                             "order": "CHW" if channels_first != moved else "HWC"})
    return out


def flatten_differs(t: Reading, k: Reading, context: Context) -> bool:
    return any(a["ported_as"] != b["order"] for a, b in by_net(t, k))


def switch_flatten(source, seen):
    """Keras flattens in the order the port laid the kernel out in: a kernel the pair's
    LAYOUTS wrote as a plain transpose is ported by the rule (its rows in Keras's H, W, C
    order); a Permute that moved channels first becomes the identity, a channels-first
    Flatten a channels-last one."""
    given = getattr(source, "LAYOUTS", None) or {}
    mismatched = {(net, a["layer"]) for net in NETS for a, b in pairs(seen, net) if a["ported_as"] != b["order"]}
    if any((net, path) in mismatched for net in NETS for path in given.get(net, {})):
        return surgery.derive(source, LAYOUTS={net: {path: layout for path, layout in given.get(net, {}).items()
                                                     if (net, path) not in mismatched} for net in NETS})

    def changes(net):
        wanted = {}
        for a, b in pairs(seen, net):
            if a["ported_as"] == b["order"]:
                continue
            if b["permute"] is not None:
                wanted[b["permute"]] = {"dims": (1, 2, 3)}
            else:
                wanted[b["flatten"]] = {"data_format": "channels_last"}
        return wanted
    return keras_edit(source, changes)


# --- training=True

TRAINING_CALLS = "_compare_training_calls"
TRAINING_DEFAULT = "_compare_training_default"
RECORDING = "_compare_recording"


def watch(keras_pair, default: Optional[bool] = None) -> None:
    """Give each model a ``__call__`` that records the ``training`` argument it is given
    while ``recording``, and with ``default`` fills it in where it is left out."""
    for model in keras_pair:
        if not getattr(type(model), "_compare_watched", False):
            base = type(model)

            def call(self, *args, _base=base, **kwargs):
                if self.__dict__.get(RECORDING):
                    self.__dict__.setdefault(TRAINING_CALLS, []).append(kwargs.get("training"))
                if kwargs.get("training") is None and self.__dict__.get(TRAINING_DEFAULT) is not None:
                    kwargs["training"] = self.__dict__[TRAINING_DEFAULT]
                return _base.__call__(self, *args, **kwargs)
            model.__class__ = type(base.__name__, (base,), {"__call__": call, "_compare_watched": True})
        if default is not None:
            model.__dict__[TRAINING_DEFAULT] = default


@contextlib.contextmanager
def recording(keras_pair):
    """Record the ``training`` argument of the models' calls within (a user's own step)."""
    watch(keras_pair)
    for model in keras_pair:
        model.__dict__[RECORDING] = True
        model.__dict__.setdefault(TRAINING_CALLS, [])
    try:
        yield
    finally:
        for model in keras_pair:
            model.__dict__[RECORDING] = False


def torch_training(pair, context: Context) -> Reading:
    return {net: {"training": bool(module.training),
                  "bn": [l.path for l in surgery.torch_layers(module, context.input_shape(net)) if l.type in TORCH_BN]}
            for net, module in zip(NETS, pair)}


def keras_training(pair, keras, context: Context) -> Reading:
    """The ``training`` values the models were called with while ``recording`` (None: left
    out); nothing where the check ran its own step, which passes it everywhere."""
    return {net: {"calls": sorted({repr(v) for v in model.__dict__.get(TRAINING_CALLS, [])}),
                  "recorded": TRAINING_CALLS in model.__dict__}
            for net, model in zip(NETS, pair)}


def training_left_out(t: Reading, k: Reading, context: Context) -> bool:
    # only a layer that behaves differently in training (BN here) makes the flag matter
    return any(t[net]["training"] and t[net]["bn"] and any(c != "True" for c in k[net]["calls"]) for net in NETS)


def switch_training(source, seen):
    """training=True passed wherever the user's Keras step leaves it out."""
    def edit(net, model, keras):
        watch([model], default=True)
        return model
    return surgery.derive(source, build_keras=surgery.keras_builder(source, edit))


# --- tensors left at their initial values

def torch_untouched(pair, context: Context) -> Reading:
    """Floating-point tensors of each module that the port does not carry over."""
    from compare import port

    out = {}
    for net, module in zip(NETS, pair):
        torch = sys.modules["torch"]
        example = torch.zeros((2, *context.input_shape(net)), dtype=next(module.parameters()).dtype)
        ported = {s.torch_key for s in port.torch_specs(net, module, example)}
        out[net] = [key for key, value in module.state_dict().items()
                    if key not in ported and value.is_floating_point()]
    return out


def keras_untouched(pair, keras, context: Context) -> Reading:
    """Keras variables outside every layer the port reaches (a layer holding weights of
    another layer it owns): the port cannot assign them."""
    from compare import port

    out = {}
    for net, model in zip(NETS, pair):
        reached = {id(v) for _, layer in port.keras_layers(model) for v in layer.weights}
        out[net] = [v.name for v in model.weights if id(v) not in reached]
    return out


def untouched(t: Reading, k: Reading, context: Context) -> bool:
    return any(t.get(net) or k.get(net) for net in NETS)


def no_switch(pair, seen):
    """The port maps every tensor it has a rule for and fails on the rest, so nothing is
    left for a counterfactual to port."""
    return None


# --- float64

def torch_dtypes(pair, context: Context) -> Reading:
    torch = sys.modules["torch"]
    G, D = pair
    dtype = next(G.parameters()).dtype
    with torch.no_grad():
        fake = G(torch.zeros((2, *context.latent_shape), dtype=dtype))
        out = D(fake)
    return {"variables": sorted({str(t.dtype).replace("torch.", "") for m in pair for t in m.state_dict().values()
                                 if t.is_floating_point()}),
            "G output": str(fake.dtype).replace("torch.", ""), "D output": str(out.dtype).replace("torch.", ""),
            "BN computes on the float32 grid": False}


def keras_dtypes(pair, keras, context: Context) -> Reading:
    G, D = pair
    rng = np.random.default_rng(3)
    z = rng.standard_normal((context.batch, *channels_last(context.latent_shape))).astype(context.dtype)
    fake = G(z, training=True)
    out = D(fake, training=True)
    x = probe_batch(3, 2)
    bn = keras.layers.BatchNormalization(momentum=0.0, dtype=context.dtype)
    bn(x.astype(context.dtype), training=True)
    numpy = getattr(getattr(keras, "ops", None), "convert_to_numpy", np.asarray)
    return {"variables": sorted({dtype_name(v.dtype) for m in pair for v in m.weights}),
            "G output": dtype_name(fake.dtype), "D output": dtype_name(out.dtype),
            "BN computes on the float32 grid": surgery.on_float32_grid(
                np.array(numpy(bn.moving_variance), dtype=np.float64))}


def channels_last(shape: Sequence[int]) -> Tuple[int, ...]:
    """A PyTorch-layout (C, H, W) shape as Keras takes it; other ranks are the same."""
    return (*shape[1:], shape[0]) if len(shape) == 3 else tuple(shape)


def dtype_name(dtype) -> str:
    return str(getattr(dtype, "name", dtype)).replace("torch.", "")


def not_float64(t: Reading, k: Reading, context: Context) -> bool:
    if context.dtype != "float64":
        return False
    return (k["variables"] != ["float64"] or k["G output"] != "float64" or k["D output"] != "float64"
            or k["BN computes on the float32 grid"])


def switch_dtype(source, seen):
    """Both sides in float32, the precision the Keras side computes in. (Keras 3's
    BatchNormalization computes in result_type(inputs, 'float32'), float32 on the JAX and
    PyTorch backends whatever floatx is: no setting makes it compute in float64.)"""
    return surgery.derive(source, DTYPE="float32")


# --- constants a framework rounds through float32 (a rule, not a mistake)

def torch_constants(pair, context: Context) -> Reading:
    """Each LeakyReLU's slope and each BatchNorm's momentum (the weight of the new batch)."""
    out = {}
    for net, layers in torch_layers(pair, context).items():
        out[net] = {"leaky_relu": [{"layer": l.path, "slope": float(l.module.negative_slope)}
                                   for l in layers if l.type == "LeakyReLU"],
                    "bn": [{"layer": l.path, "momentum": float(l.module.momentum)}
                           for l in layers if l.type in TORCH_BN and l.module.momentum is not None]}
    return out


def keras_constants(pair, keras, context: Context) -> Reading:
    """The same constants as the Keras side sets them and as its ops apply them, measured in
    the check's dtype on fresh layers: LeakyReLU(slope) on -1, and the weight a training
    BatchNormalization(momentum) gives a batch mean of 1 in a moving mean that starts at 0."""
    numpy = getattr(getattr(keras, "ops", None), "convert_to_numpy", np.asarray)
    one = np.ones((2, 1), dtype=context.dtype)

    def applied_slope(slope):
        try:
            layer = keras.layers.LeakyReLU(negative_slope=slope, dtype=context.dtype)  # Keras 3
        except TypeError:
            layer = keras.layers.LeakyReLU(alpha=slope, dtype=context.dtype)  # Keras 2
        return -float(np.asarray(numpy(layer(-one)), dtype=np.float64).flat[0])

    def applied_weight(momentum):
        bn = keras.layers.BatchNormalization(momentum=momentum, dtype=context.dtype)
        bn(one, training=True)
        return float(np.asarray(numpy(bn.moving_mean), dtype=np.float64)[0])

    applied_slope, applied_weight = functools.lru_cache()(applied_slope), functools.lru_cache()(applied_weight)
    out = {}
    for net, layers in keras_layers(pair).items():
        relus = [l for l in layers if l.type == "LeakyReLU"]
        bns = [l for l in layers if l.type == "BatchNormalization"]
        out[net] = {"leaky_relu": [], "bn": []}
        for l in relus:
            slope = float(l.config.get("negative_slope", l.config.get("alpha")))
            out[net]["leaky_relu"].append({"layer": l.path, "slope": slope, "set": slope,
                                           "applied": applied_slope(slope)})
        for l in bns:
            momentum = float(l.config["momentum"])
            out[net]["bn"].append({"layer": l.path, "momentum": momentum, "set": 1 - momentum,
                                   "applied": applied_weight(momentum)})
    return out


def rounded_constants(t: Reading, k: Reading, context: Context) -> bool:
    """Where the Keras ops apply a constant other than the one set, and that is the set one
    rounded to float32: visible only in float64 (in float32 the two are the same number)."""
    if context.dtype != "float64":
        return False
    return any(applied != value and applied == float(np.float32(value)) for value, applied in applied_constants(k))


def applied_constants(k: Reading) -> List[Tuple[float, float]]:
    """(set, applied) for every constant of a Keras reading of ``keras_constants``."""
    return [(a["set"], a["applied"]) for net in NETS for kind in ("leaky_relu", "bn") for a in k.get(net, {}).get(kind, [])]


def switch_constants(source, seen):
    """PyTorch given the constants the Keras ops apply: each LeakyReLU's slope and each
    BatchNorm's momentum, paired in order."""
    def torch_edit(net, module):
        layers = dict(module.named_modules())
        for kind, attr in (("leaky_relu", "negative_slope"), ("bn", "momentum")):
            for a, b in zip(seen["torch"].get(net, {}).get(kind, []), seen["keras"].get(net, {}).get(kind, [])):
                if b["applied"] != b["set"]:
                    setattr(layers[a["layer"]], attr, b["applied"])
    return surgery.derive(source, build_torch=surgery.torch_builder(source, torch_edit))


CAUSES: List[Cause] = [
    Cause("bn-momentum", "BatchNorm momentum convention", torch_bn, keras_bn, momentum_differs,
          keras_bn_matching("momentum", lambda a: 1 - a["momentum"]),
          "setting each Keras BatchNormalization's momentum to 1 - PyTorch's"),
    Cause("bn-epsilon", "BatchNorm epsilon", torch_bn, keras_bn, epsilon_differs,
          keras_bn_matching("epsilon", lambda a: a["eps"]),
          "setting each Keras BatchNormalization's epsilon to PyTorch's"),
    Cause("bn-variance-estimator", "the variance BatchNorm keeps (unbiased in PyTorch, biased in Keras)",
          torch_estimator, keras_estimator, estimators_differ, switch_estimator,
          "making PyTorch's BatchNorm keep the biased variance, as Keras does"),
    Cause("adam-epsilon", "where Adam adds its epsilon", torch_adam, keras_adam, epsilon_matters,
          switch_adam_eps, f"setting Adam's epsilon to {NEGLIGIBLE_EPS:g} on both sides"),
    Cause("adam-constants", "Adam's constants (lr, betas) and their float32 rounding", torch_adam, keras_adam,
          constants_differ, switch_adam_constants,
          "giving both sides PyTorch's Adam constants rounded to float32 numbers"),
    Cause("same-padding", "'same' padding with stride 2 (Keras pads the odd one at the end)", torch_convs,
          keras_convs, padding_differs, switch_padding,
          "giving each Keras conv PyTorch's padding explicitly, then padding='valid'"),
    Cause("bias-before-bn", "a bias before BatchNorm (its gradient is rounding noise)", torch_biases,
          keras_biases, any_bias, switch_bias, "removing each bias that feeds a BatchNorm, on both sides"),
    Cause("bce-probabilities", "BCE on probabilities instead of logits", torch_output, keras_output,
          probabilities, switch_output, "dropping D's final sigmoid and taking BCE from logits, on both sides"),
    Cause("flatten-order", "the Flatten order before a Dense (NCHW against NHWC)", torch_flatten,
          keras_flatten, flatten_differs, switch_flatten,
          "making Keras flatten in the order the Dense kernel was ported in"),
    Cause("training-flag", "a Keras call without training=True", torch_training, keras_training,
          training_left_out, switch_training, "passing training=True where it was left out"),
    Cause("default-initialisers", "a tensor left at its framework's initial value", torch_untouched,
          keras_untouched, untouched, no_switch, "porting the tensor that was left"),
    Cause("float64-not-computed", "float64 asked for but not computed", torch_dtypes, keras_dtypes,
          not_float64, switch_dtype, "running both sides in float32"),
    Cause("float32-constants", "constants the Keras ops round to float32 (LeakyReLU's slope, BatchNorm's "
          "momentum)", torch_constants, keras_constants, rounded_constants, switch_constants,
          "giving PyTorch the constants the Keras ops apply"),
]
# causes that are a framework's rule, not a mistake in the port: where the only confirmed
# causes are rules and their run is within tolerance, the engine passes under them
RULES = ("float32-constants",)

BY_ID = {cause.id: cause for cause in CAUSES}


def read_torch_all(torch_pair, pair, dtype: str) -> Dict[str, Reading]:
    """Every cause's torch reading (JSON), in the process that built the torch side."""
    context = Context.of(pair, dtype)
    return {cause.id: cause.read_torch(torch_pair, context) for cause in CAUSES}


def read_all(torch_readings: Dict[str, Reading], keras_pair, keras, pair, dtype: str) -> Dict[str, dict]:
    """Every cause's reading of both sides and whether it is a suspect, in a Keras process."""
    context = Context.of(pair, dtype)
    return {cause.id: cause.read(torch_readings[cause.id], keras_pair, keras, context) for cause in CAUSES}


def switch(cause_id: str, source, seen: dict):
    """``source`` with the cause ``cause_id`` switched off, from its reading ``seen`` (an
    entry of ``read_all``); None where no counterfactual can be built."""
    return BY_ID[cause_id].switch(source, seen)
