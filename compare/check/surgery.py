"""Reading and editing built model pairs, for the known causes of a divergence.

A cause reads the layers it depends on and, to confirm itself, builds the pair again with
one thing changed. The edits keep every torch module path and every Keras layer name that
holds a tensor, so that the port pairs the tensors of an edited pair as it paired the
original's (a Keras layer that gains an explicit padding becomes a nested model
``<name>_explicit/<name>``). torch and Keras are reached only through the objects passed in.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

NETS = ("G", "D")
TORCH_BN = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
TORCH_CONV = ("Conv1d", "Conv2d", "ConvTranspose2d")
KERAS_CONV = ("Conv1D", "Conv2D", "Conv2DTranspose")
# layers that pass a tensor through unchanged in value (looking past them finds what feeds what)
TORCH_SHAPE_ONLY = ("Flatten", "Unflatten", "Identity", "Dropout", "Dropout2d")
KERAS_SHAPE_ONLY = ("Flatten", "Reshape", "Dropout", "InputLayer", "Permute")


# --- torch

class TorchLayer:
    """A leaf module as one forward pass met it: path, module, input and output shapes."""

    def __init__(self, path: str, module, inputs: Tuple[int, ...], output: Tuple[int, ...]):
        self.path, self.module, self.input, self.output = path, module, inputs, output
        self.type = type(module).__name__


def torch_layers(module, input_shape: Sequence[int]) -> List[TorchLayer]:
    """The leaf modules of ``module`` in the order a forward pass on a zero batch of two
    (``input_shape`` without the batch axis) calls them, each once. Runs in eval mode, so
    no BN statistics move; the module's tensors are left as they were."""
    torch = sys.modules["torch"]  # loaded: ``module`` is a torch module
    found: List[TorchLayer] = []
    names = {id(m): name for name, m in module.named_modules() if name and not list(m.children())}

    def hook(mod, inputs, output):
        if id(mod) in names and all(layer.module is not mod for layer in found):
            shape_in = tuple(inputs[0].shape) if inputs and hasattr(inputs[0], "shape") else ()
            found.append(TorchLayer(names[id(mod)], mod, shape_in, tuple(getattr(output, "shape", ()))))

    params = list(module.parameters())
    dtype = params[0].dtype if params else torch.float32
    handles = [m.register_forward_hook(hook) for name, m in module.named_modules() if id(m) in names]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros((2, *input_shape), dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return found


def torch_parent(module, path: str):
    parent = module
    for part in path.split(".")[:-1]:
        parent = getattr(parent, part)
    return parent, path.split(".")[-1]


def replace_torch(module, path: str, new) -> None:
    """Put ``new`` where the submodule at ``path`` was (same path, so same tensor names)."""
    parent, name = torch_parent(module, path)
    setattr(parent, name, new)


def edited(nets, edit: Callable[..., Any], *args) -> Tuple[Any, Any]:
    """Each of (G, D) after ``edit(net, model, *args)``: what it returns, or the model itself
    (edited in place) where it returns None."""
    out = []
    for net, model in zip(NETS, nets):
        new = edit(net, model, *args)
        out.append(model if new is None else new)
    return tuple(out)


def torch_builder(source, edit: Callable[[str, Any], Any]) -> Callable[[], Tuple[Any, Any]]:
    """``source.build_torch()`` followed by ``edit(net, module)`` on each network."""
    return lambda: edited(source.build_torch(), edit)


# --- Keras

class KerasLayer:
    """A leaf layer of a Keras model (nested models flattened), its path 'outer/inner' and
    its position among the leaves. Edits find a layer by position: automatic layer names
    differ from one build to the next."""

    def __init__(self, path: str, layer, index: int):
        self.path, self.layer, self.index = path, layer, index
        self.type = type(layer).__name__
        self.config = layer.get_config()


def keras_layers(model) -> List[KerasLayer]:
    """Every leaf layer of ``model`` in its layer order, input layers left out."""
    def leaves(model, prefix):
        for layer in model.layers:
            if nested(layer):
                yield from leaves(layer, f"{prefix}{layer.name}/")
            elif type(layer).__name__ != "InputLayer":
                yield prefix + layer.name, layer
    return [KerasLayer(path, layer, i) for i, (path, layer) in enumerate(leaves(model, ""))]


def nested(layer) -> bool:
    return isinstance(getattr(layer, "layers", None), list) and bool(layer.layers)


def keras_builder(source, edit: Callable[[str, Any, Any], Any]) -> Callable[[Any], Tuple[Any, Any]]:
    """``source.build_keras(keras)`` followed by ``edit(net, model, keras)`` on each network."""
    return lambda keras: edited(source.build_keras(keras), edit, keras)


def clone_keras(model, keras, edit: Callable[[Any, dict], Any]):
    """A new model of the same graph in which each layer is ``edit(layer, config)``: a
    layer, or None to rebuild the layer from its (possibly changed) config. Weights are
    not copied: the check ports them after building."""
    def clone(layer):
        if nested(layer):
            return clone_keras(layer, keras, edit)  # clone_model does not descend by itself
        config = layer.get_config()
        made = edit(layer, config)
        return made if made is not None else layer.__class__.from_config(config)
    return keras.models.clone_model(model, clone_function=clone)


def at_positions(model, wanted: Dict[int, Any]) -> Dict[int, Any]:
    """``wanted`` keyed by position among the leaves -> keyed by the layers' ids."""
    return {id(leaf.layer): wanted[leaf.index] for leaf in keras_layers(model) if leaf.index in wanted}


def rebuild_layers(model, keras, changes: Dict[int, Dict[str, Any]]):
    """The model with the config of the leaf at each position in ``changes`` updated."""
    by_id = at_positions(model, changes)

    def edit(layer, config):
        config.update(by_id.get(id(layer), {}))
        return None
    return clone_keras(model, keras, edit)


def on_float32_grid(values: np.ndarray) -> bool:
    """Every value a float32 number: what a float64 tensor computed in float32 looks like."""
    return bool(np.all(values == values.astype(np.float32).astype(np.float64)))


def derive(source, **changes) -> types.SimpleNamespace:
    """A copy of a pair source (FILE.py's module, or a copy) with ``changes`` applied."""
    values = {name: getattr(source, name) for name in dir(source) if not name.startswith("__")}
    values.update(changes)
    return types.SimpleNamespace(**values)
