"""The weight port between a PyTorch network and its Keras counterpart, by naming and layout rules.

A network's tensors are described once, from the torch module (the reference): one
``TensorSpec`` per parameter or state tensor, named ``<net>.<torch module path>.<role>``
and shaped in PyTorch's layout (Conv ``(out, in, kh, kw)``, ConvTranspose
``(in, out, kh, kw)``, Linear ``(out, in)``). The Keras side is matched to those specs by
the order of its weighted layers and each layer type's roles; a user can override the
pairing. Conversions are transposes, and for a Linear that reads a flattened 4-D
activation, the permutation between NCHW and NHWC feature order; both directions are
exact, so a round trip is bit for bit.

numpy only: torch and Keras are reached only through the objects passed in, so a Keras
engine process can use the specs (sent as JSON) without importing torch.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np


class PortError(ValueError):
    """A tensor the port cannot map; the message names it."""


# torch class -> (Keras classes that may stand for it, torch attribute -> canonical role)
CONV_ROLES = {"weight": "kernel", "bias": "bias"}
BN_ROLES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
LAYER_RULES: Dict[str, Tuple[Tuple[str, ...], Dict[str, str]]] = {
    "Conv1d": (("Conv1D",), CONV_ROLES),
    "Conv2d": (("Conv2D",), CONV_ROLES),
    "ConvTranspose2d": (("Conv2DTranspose",), CONV_ROLES),
    "Linear": (("Dense",), CONV_ROLES),
    "BatchNorm1d": (("BatchNormalization",), BN_ROLES),
    "BatchNorm2d": (("BatchNormalization",), BN_ROLES),
    "LayerNorm": (("LayerNormalization",), {"weight": "gamma", "bias": "beta"}),
    "Embedding": (("Embedding",), {"weight": "embeddings"}),
}
NOT_PORTED = ("num_batches_tracked",)  # Keras keeps no such counter; momentum BN never reads it


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor of a network, in canonical name and layout."""

    name: str  # "<net>.<layer>.<role>"
    net: str
    layer: str  # torch module path within the net
    layer_type: str  # torch class name
    role: str  # kernel, bias, gamma, beta, moving_mean, moving_variance, embeddings
    kind: str  # "param" (trainable) or "state"
    shape: Tuple[int, ...]  # canonical (PyTorch) layout
    torch_key: str  # state_dict key within the net
    flatten: Optional[Tuple[int, ...]] = None  # (C, H, W) a Linear's input was flattened from

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        out["flatten"] = None if self.flatten is None else list(self.flatten)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "TensorSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise PortError(f"tensor spec {data.get('name')!r}: unknown fields {', '.join(sorted(unknown))}")
        values = dict(data)
        values["shape"] = tuple(int(n) for n in data["shape"])
        values["flatten"] = None if data.get("flatten") is None else tuple(int(n) for n in data["flatten"])
        return cls(**values)


def layers_of(specs: Sequence[TensorSpec]) -> List[str]:
    """The torch module paths of ``specs``, once each, in spec order."""
    return list(dict.fromkeys(spec.layer for spec in specs))


# --- the torch side

def execution_order(module, example) -> Tuple[List[str], Dict[str, Tuple[int, ...]]]:
    """Run ``module`` once on ``example`` with forward hooks: the module paths in the order
    they are first called, and for each Linear fed a flattened 4-D activation, that
    activation's (C, H, W). Leaves the module's tensors as they were (BN statistics too)."""
    order: List[str] = []
    shapes: List[Tuple[str, Tuple[int, ...]]] = [("", tuple(example.shape))]  # (module, output shape)
    flatten: Dict[str, Tuple[int, ...]] = {}
    names = {id(m): name for name, m in module.named_modules()}

    def hook(mod, inputs, output):
        name = names[id(mod)]
        if name not in order:
            order.append(name)
        if type(mod).__name__ == "Linear" and inputs and getattr(inputs[0], "ndim", 0) == 2:
            features = int(inputs[0].shape[1])
            for _, shape in reversed(shapes):  # the last 4-D activation before it
                if len(shape) == 4:
                    if int(np.prod(shape[1:])) == features:
                        flatten.setdefault(name, tuple(int(n) for n in shape[1:]))
                    break
                if len(shape) != 2 or shape[1] != features:
                    break  # something reshaped it in between: no known order
        if hasattr(output, "shape"):
            shapes.append((name, tuple(output.shape)))

    saved = {k: v.clone() for k, v in module.state_dict().items()}
    was_training = module.training
    handles = [m.register_forward_hook(hook) for name, m in module.named_modules() if name]
    try:
        module.eval()  # eval: no BN statistics move, any batch size works
        with no_grad_of(example):
            module(example)
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
        module.load_state_dict(saved)
    return order, flatten


def no_grad_of(tensor):
    """torch.no_grad, reached through a tensor (this module does not import torch)."""
    import sys

    return sys.modules[type(tensor).__module__.split(".")[0]].no_grad()


def torch_specs(net: str, module, example=None) -> List[TensorSpec]:
    """Every parameter and state tensor of ``module`` (named ``net``), in execution order
    when an ``example`` input is given (then a Linear after a Flatten knows its feature
    shape), else in definition order. Raises PortError for a tensor of a layer type the
    port has no rule for."""
    order, flatten = execution_order(module, example) if example is not None else ([], {})
    modules = dict(module.named_modules())
    paths = [p for p in order if p in modules] + [p for p in modules if p not in order]
    specs: List[TensorSpec] = []
    for path in paths:
        sub = modules[path]
        own = [(n, p, "param") for n, p in sub.named_parameters(recurse=False)]
        own += [(n, b, "state") for n, b in sub.named_buffers(recurse=False) if b is not None]
        own = [(n, t, kind) for n, t, kind in own if n not in NOT_PORTED]
        if not own:
            continue
        layer_type = type(sub).__name__
        if layer_type not in LAYER_RULES:
            raise PortError(f"{net}.{path}.{own[0][0]}: no port rule for torch layer type {layer_type} "
                            f"(known: {', '.join(LAYER_RULES)})")
        roles = LAYER_RULES[layer_type][1]
        for attr, tensor, kind in own:
            if attr not in roles:
                raise PortError(f"{net}.{path}.{attr}: {layer_type} tensor {attr!r} has no port rule")
            key = f"{path}.{attr}" if path else attr
            specs.append(TensorSpec(
                name=f"{net}.{path}.{roles[attr]}", net=net, layer=path, layer_type=layer_type,
                role=roles[attr], kind=kind, shape=tuple(int(n) for n in tensor.shape), torch_key=key,
                flatten=flatten.get(path) if attr == "weight" else None))
    return specs


def torch_export(module, specs: Sequence[TensorSpec]) -> Dict[str, np.ndarray]:
    """float64 numpy copies of ``module``'s tensors, in canonical names and layout."""
    state = module.state_dict()
    return {s.name: state[s.torch_key].detach().cpu().numpy().astype(np.float64) for s in specs}


def torch_load(module, specs: Sequence[TensorSpec], arrays: Dict[str, np.ndarray]) -> None:
    """Copy canonical ``arrays`` into ``module``'s tensors, cast to each tensor's dtype."""
    live = module.state_dict(keep_vars=True)
    for spec in specs:
        target = live[spec.torch_key]
        value = np.asarray(arrays[spec.name])
        if tuple(value.shape) != tuple(target.shape):
            raise PortError(f"{spec.name}: array of shape {value.shape}, torch tensor {tuple(target.shape)}")
        target.data.copy_(target.data.new_tensor(value))


# --- layouts

def to_keras(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """Canonical layout -> the Keras layer's."""
    if spec.role != "kernel":
        return array
    if array.ndim in (3, 4):
        # (out, in, k...) and ConvTranspose's (in, out, k...) -> (k..., in, out) and (k..., out, in)
        return array.transpose(*range(2, array.ndim), 1, 0)
    if spec.flatten is not None:  # torch's features run C, H, W; Keras's flattened NHWC runs H, W, C
        c, h, w = spec.flatten
        array = array.reshape(array.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(array.shape[0], -1)
    return array.T


def from_keras(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """The Keras layer's layout -> canonical."""
    if spec.role != "kernel":
        return array
    if array.ndim in (3, 4):
        k = array.ndim - 2
        return array.transpose(k + 1, k, *range(k))
    array = array.T
    if spec.flatten is not None:
        c, h, w = spec.flatten
        array = array.reshape(array.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(array.shape[0], -1)
    return array


def with_layouts(specs: Sequence[TensorSpec], layouts: Optional[Dict[str, str]]) -> List[TensorSpec]:
    """``specs`` with a user's layouts applied: torch module path of a Linear -> "transpose"
    (its kernel written as a plain transpose, the rows a Flatten feeds left in torch's C, H, W
    order) or "rules". Raises PortError for a path that is not a Linear of the net."""
    layouts = dict(layouts or {})
    linears = {s.layer for s in specs if s.layer_type == "Linear"}
    for layer in layouts:
        if layer not in linears:
            raise PortError(f"layout {layer!r}: no Linear of that path; the net's Linears are "
                            f"{', '.join(sorted(linears)) or 'none'}")
    return [dataclasses.replace(s, flatten=None) if layouts.get(s.layer) == "transpose" and s.role == "kernel"
            else s for s in specs]


def keras_shape(spec: TensorSpec) -> Tuple[int, ...]:
    return tuple(to_keras(spec, np.zeros(spec.shape)).shape)


# --- the Keras side

def keras_layers(model, prefix: str = "") -> Iterator[Tuple[str, object]]:
    """(path, layer) for every leaf layer that holds weights, nested models flattened, in
    the model's layer order; a nested layer's path is 'outer/inner'."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(getattr(layer, "layers", None), list) and layer.layers:
            yield from keras_layers(layer, path + "/")
        elif layer.weights:
            yield path, layer


def keras_layer(model, path: str):
    """The layer at ``path`` (see ``keras_layers``)."""
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def variable_role(variable) -> str:
    """'gamma' from a Keras 3 name ('gamma') or a Keras 2 one ('D/bn/gamma:0')."""
    return variable.name.split("/")[-1].split(":")[0]


def keras_assignment(specs: Sequence[TensorSpec], keras_model,
                     overrides: Optional[Dict[str, str]] = None) -> Dict[str, Tuple[str, int]]:
    """Canonical name -> (Keras layer path, index in that layer's weights).

    Torch layers pair with Keras weighted layers in order, each pair checked against the
    layer rules; ``overrides`` maps a canonical name or a torch module path to a Keras layer
    name (a path for nested models), and the layers it does not name pair in order. Raises
    PortError naming the first tensor that cannot be matched and what was found instead."""
    overrides = dict(overrides or {})
    found = list(keras_layers(keras_model))
    by_path = dict(found)
    torch_layers = layers_of(specs)
    names = {spec.name for spec in specs}
    for key, target in overrides.items():
        if key not in names and key not in torch_layers:
            raise PortError(f"override {key!r}: no such tensor or torch module "
                            f"(torch modules: {', '.join(torch_layers)})")
        if target not in by_path:
            raise PortError(f"override {key!r}: no Keras layer {target!r} with weights "
                            f"(found: {', '.join(by_path) or 'none'})")
    pinned = {layer: overrides[layer] for layer in torch_layers if layer in overrides}
    free_keras = [path for path, _ in found if path not in pinned.values()]
    free_torch = [layer for layer in torch_layers if layer not in pinned]
    pairing = dict(pinned)
    for i, layer in enumerate(free_torch):
        if i >= len(free_keras):
            first = next(s for s in specs if s.layer == layer)
            raise PortError(f"{first.name}: no Keras layer left to pair with torch {first.layer_type} "
                            f"{layer!r} ({len(torch_layers)} torch layers with tensors, {len(found)} Keras "
                            f"layers with weights)")
        pairing[layer] = free_keras[i]
    out: Dict[str, Tuple[str, int]] = {}
    for spec in specs:
        path = overrides.get(spec.name, pairing[spec.layer])
        layer = by_path[path]
        kind = type(layer).__name__
        allowed = LAYER_RULES[spec.layer_type][0]
        if kind not in allowed:
            raise PortError(f"{spec.name}: torch {spec.layer_type} {spec.layer!r} paired with Keras {kind} "
                            f"{path!r}; expected {' or '.join(allowed)} (override the pairing if the order differs)")
        roles = [variable_role(v) for v in layer.weights]
        if spec.role not in roles:
            raise PortError(f"{spec.name}: Keras {kind} {path!r} has no {spec.role} "
                            f"(its weights: {', '.join(roles)})")
        index = roles.index(spec.role)
        found_shape = tuple(int(n) for n in layer.weights[index].shape)
        if found_shape != keras_shape(spec):
            raise PortError(f"{spec.name}: Keras {path!r} {spec.role} has shape {found_shape}, "
                            f"expected {keras_shape(spec)} from torch {spec.shape}")
        out[spec.name] = (path, index)
    for path, layer in found:  # every Keras tensor must be accounted for
        for index, variable in enumerate(layer.weights):
            if (path, index) not in out.values():
                raise PortError(f"Keras {type(layer).__name__} {path!r} {variable_role(variable)}: "
                                f"no torch tensor maps to it")
    return out


def keras_variable(model, assignment: Dict[str, Tuple[str, int]], name: str):
    path, index = assignment[name]
    return keras_layer(model, path).weights[index]


def numpy_dtype(variable) -> np.dtype:
    """A Keras 3 variable's dtype is a string, a Keras 2 one's a tf.DType."""
    dtype = variable.dtype
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


def keras_export(model, specs: Sequence[TensorSpec], assignment) -> Dict[str, np.ndarray]:
    """float64 numpy copies of ``model``'s tensors, in canonical names and layout."""
    return {s.name: from_keras(s, np.array(keras_variable(model, assignment, s.name).numpy(), dtype=np.float64))
            for s in specs}


def keras_load(model, specs: Sequence[TensorSpec], assignment, arrays: Dict[str, np.ndarray]) -> None:
    """Assign canonical ``arrays`` to ``model``'s variables, cast to each variable's dtype."""
    for spec in specs:
        variable = keras_variable(model, assignment, spec.name)
        value = np.asarray(arrays[spec.name])
        if tuple(value.shape) != spec.shape:
            raise PortError(f"{spec.name}: array of shape {value.shape}, expected {spec.shape}")
        variable.assign(to_keras(spec, value).astype(numpy_dtype(variable)))
