"""A user's model pair: FILE.py, read without a framework in the parent and loaded in the engines.

FILE.py defines ``build_torch()`` -> (G, D) torch modules, ``build_keras(keras)`` -> (G, D)
Keras models (one function for Keras 3 on every backend and for Keras 2: it receives the
keras module to use), and ``LATENT_SHAPE`` and ``IMAGE_SHAPE`` in PyTorch layout. Optional:
``BATCH`` (default 8); ``OPTIMIZER``, Adam's settings for both frameworks ({"lr", "beta_1",
"beta_2", "eps"}, or {"torch": {...}, "keras": {...}}; a setting left out takes the check's
default below); ``D_OUTPUT``, "logits" or "probabilities", what D's output is and so which
BCE the canonical iteration takes (or one per framework; by default read from whether D ends
in a sigmoid); ``DTYPE``, a precision that replaces the one asked for;
``OVERRIDES`` {"G": {...}, "D": {...}}, the weight port's pairing overrides; ``LAYOUTS``
{"G": {...}, "D": {...}}, torch module path of a Linear -> "transpose" where the team's own
converter writes that Dense kernel as a plain transpose (no reordering of the rows a Flatten
feeds), instead of the port's rule ("rules"); and
``train_step_torch(G, D, opt_G, opt_D, loss, real, z)`` / ``train_step_keras(keras, G, D,
opt_G, opt_D, loss, real, z)``, each returning a dict of float losses, to train with instead
of the canonical iteration.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import sys
from typing import Callable, Dict, Optional, Tuple

from compare.models.toy import MATCHED_ADAM_EPS, PARITY

REQUIRED_FUNCTIONS = ("build_torch", "build_keras")
OPTIONAL_FUNCTIONS = ("train_step_torch", "train_step_keras")
REQUIRED_VALUES = ("LATENT_SHAPE", "IMAGE_SHAPE")
FRAMEWORKS = ("torch", "keras")
ADAM_KEYS = ("lr", "beta_1", "beta_2", "eps")
# Adam constants float32 represents exactly (TensorFlow casts Python floats through float32)
# and an epsilon small enough that where it is added does not matter: the port is checked,
# not the optimizers' defaults
DEFAULT_ADAM = {"lr": PARITY.lr, "beta_1": PARITY.beta_1, "beta_2": PARITY.beta_2, "eps": MATCHED_ADAM_EPS}
D_OUTPUTS = ("logits", "probabilities")
LAYOUTS = ("rules", "transpose")  # how a Linear's kernel is written into its Dense
DTYPES = ("float32", "float64")


class PairError(ValueError):
    """FILE.py is not a usable model pair; the message is one line that says why."""


@dataclasses.dataclass(frozen=True)
class Pair:
    """A model pair as the check runs it; a cause's switch returns a modified copy."""

    path: str
    build_torch: Callable
    build_keras: Callable
    latent_shape: Tuple[int, ...]
    image_shape: Tuple[int, ...]
    batch: int = 8
    optimizer: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)  # framework -> Adam
    d_output: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)  # framework -> output, None: read
    dtype: Optional[str] = None  # replaces the check's precision
    overrides: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    layouts: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)  # net -> Linear path -> layout
    train_step_torch: Optional[Callable] = None
    train_step_keras: Optional[Callable] = None


def inspect_file(path: str) -> None:
    """What can be told without importing FILE.py (the parent imports no framework): it
    exists, parses, and defines the required names at top level. Raises PairError."""
    if not os.path.isfile(path):
        raise PairError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise PairError(f"{path}: cannot be read: {exc}")
    except SyntaxError as exc:
        raise PairError(f"{path}:{exc.lineno}: syntax error: {exc.msg}")
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
    missing = [name for name in (*REQUIRED_FUNCTIONS, *REQUIRED_VALUES) if name not in defined]
    if missing and not any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in tree.body):
        raise PairError(f"{path}: defines no {', '.join(missing)} (a model pair defines build_torch(), "
                        f"build_keras(keras), LATENT_SHAPE and IMAGE_SHAPE)")


def shape_value(path: str, name: str, value) -> Tuple[int, ...]:
    if not (isinstance(value, (tuple, list)) and value and all(isinstance(n, int) and not isinstance(n, bool)
                                                               and n > 0 for n in value)):
        raise PairError(f"{path}: {name} must be a tuple of positive whole numbers, not {value!r}")
    return tuple(value)


def per_framework(path: str, name: str, value, check: Callable) -> Dict:
    """``value`` for both frameworks, or a {"torch": ..., "keras": ...} dict of them."""
    if isinstance(value, dict) and set(value) & set(FRAMEWORKS):
        unknown = set(value) - set(FRAMEWORKS)
        if unknown:
            raise PairError(f"{path}: {name} has unknown keys {', '.join(map(repr, sorted(unknown)))}; "
                            f"give one setting or one per framework ({', '.join(FRAMEWORKS)})")
        return {fw: check(f"{name}[{fw!r}]", value.get(fw)) for fw in FRAMEWORKS}
    return {fw: check(name, value) for fw in FRAMEWORKS}


def load(path: str):
    """Import FILE.py (in an engine process): the pair source. Raises PairError."""
    inspect_file(path)
    name = "compare_user_pair"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # FILE.py may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PairError(f"{path}: importing it raised {type(exc).__name__}: {exc}")
    finally:
        sys.path.remove(folder)
    return module


def from_module(path: str, module) -> Pair:
    """The Pair a pair source (FILE.py's module, or a cause's modified copy) defines, every
    name checked. Raises PairError."""
    functions = {}
    for fname in REQUIRED_FUNCTIONS + OPTIONAL_FUNCTIONS:
        value = getattr(module, fname, None)
        if value is None and fname in OPTIONAL_FUNCTIONS:
            continue
        if not callable(value):
            raise PairError(f"{path}: {fname} must be a function, not {type(value).__name__}")
        functions[fname] = value
    for vname in REQUIRED_VALUES:
        if not hasattr(module, vname):
            raise PairError(f"{path}: defines no {vname}")
    batch = getattr(module, "BATCH", 8)
    if not (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 2):
        raise PairError(f"{path}: BATCH must be a whole number of at least 2 (BatchNorm needs two), not {batch!r}")

    def adam(name: str, value) -> Dict[str, float]:
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise PairError(f"{path}: {name} must be a dict of {', '.join(ADAM_KEYS)}, not {value!r}")
        unknown = set(value) - set(ADAM_KEYS)
        if unknown:
            raise PairError(f"{path}: {name} has unknown keys {', '.join(map(repr, sorted(unknown)))}; "
                            f"valid: {', '.join(ADAM_KEYS)}")
        for key, number in value.items():
            if not (isinstance(number, (int, float)) and not isinstance(number, bool) and number >= 0):
                raise PairError(f"{path}: {name}[{key!r}] must be a number of at least 0, not {number!r}")
        return {**DEFAULT_ADAM, **{k: float(v) for k, v in value.items()}}

    def output(name: str, value) -> Optional[str]:
        if value is not None and value not in D_OUTPUTS:
            raise PairError(f"{path}: {name} must be one of {', '.join(map(repr, D_OUTPUTS))}, not {value!r}")
        return value

    dtype = getattr(module, "DTYPE", None)
    if dtype is not None and dtype not in DTYPES:
        raise PairError(f"{path}: DTYPE must be one of {', '.join(map(repr, DTYPES))}, not {dtype!r}")
    def per_net(name: str, valid: Callable[[object], bool], form: str) -> Dict[str, Dict[str, str]]:
        """``name``'s {"G": {torch path: value}, "D": {...}}, each value ``valid``; else a PairError."""
        value = getattr(module, name, None) or {}
        if not (isinstance(value, dict) and set(value) <= {"G", "D"} and all(
                isinstance(v, dict) and all(isinstance(a, str) and valid(b) for a, b in v.items())
                for v in value.values())):
            raise PairError(f"{path}: {name} must be {{'G': {{{form}}}, 'D': {{...}}}}, not {value!r}")
        return {net: dict(v) for net, v in value.items()}

    overrides = per_net("OVERRIDES", lambda b: isinstance(b, str), "torch name: keras layer")
    layouts = per_net("LAYOUTS", lambda b: b in LAYOUTS, "torch Linear path: 'rules' or 'transpose'")
    return Pair(
        path=os.path.abspath(path), build_torch=functions["build_torch"], build_keras=functions["build_keras"],
        latent_shape=shape_value(path, "LATENT_SHAPE", module.LATENT_SHAPE),
        image_shape=shape_value(path, "IMAGE_SHAPE", module.IMAGE_SHAPE), batch=batch,
        optimizer=per_framework(path, "OPTIMIZER", getattr(module, "OPTIMIZER", None), adam),
        d_output=per_framework(path, "D_OUTPUT", getattr(module, "D_OUTPUT", None), output), dtype=dtype,
        overrides=overrides, layouts=layouts,
        train_step_torch=functions.get("train_step_torch"), train_step_keras=functions.get("train_step_keras"))


def built_pair(path: str, what, framework: str) -> tuple:
    """``what`` returned by a builder must be a (G, D) pair. Raises PairError."""
    builder = "build_torch()" if framework == "torch" else "build_keras(keras)"
    if not (isinstance(what, (tuple, list)) and len(what) == 2):
        raise PairError(f"{path}: {builder} must return (G, D), not {type(what).__name__}")
    return tuple(what)
