"""The weight port (compare/port.py): names and layouts from the torch module, the pairing with
Keras layers, and a bit-exact round trip in each Keras engine's own process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from compare import port
from compare.engines import ENGINES
from compare.observe import INIT_CONFIGS
from compare.tests.locations import BASELINE
from compare.tests.plugin import KERAS_ENGINES

torch = pytest.importorskip("torch")
nn = torch.nn


class MixedG(nn.Module):
    """Linear -> BatchNorm1d -> view -> ConvTranspose: a G no rule was written for."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 32)
        self.bn = nn.BatchNorm1d(32)
        self.up = nn.ConvTranspose2d(8, 3, 4, 2, 1)

    def forward(self, z):
        return torch.tanh(self.up(torch.relu(self.bn(self.fc(z))).view(-1, 8, 2, 2)))


def mixed_d():
    """Conv -> BN -> Flatten -> Linear -> LayerNorm -> Linear (the head is defined first, so
    definition order and execution order differ)."""
    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 1)
            self.conv = nn.Conv2d(3, 4, 3, 2, 1)
            self.bn = nn.BatchNorm2d(4)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(4 * 2 * 2, 8)
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            x = self.flatten(nn.functional.leaky_relu(self.bn(self.conv(x)), 0.2))
            return self.head(self.norm(self.fc(x)))
    return D()


def test_toy_names_are_the_canonical_ones():
    """The toy GAN's derived names are the ones its recorded runs use (the shipped baseline), in
    every configuration, and each names a tensor of the torch modules."""
    from compare.models import toy

    with open(BASELINE, encoding="utf-8") as f:
        baseline = json.load(f)
    for init, config in INIT_CONFIGS.items():
        G, D = toy.build_torch(**toy.builder_args(config, "torch"))
        specs = port.torch_specs("G", G, torch.zeros(2, *toy.LATENT_SHAPE)) + \
            port.torch_specs("D", D, torch.zeros(2, *toy.IMAGE_SHAPE))
        records = [r for r in baseline["results"] if r["init"] == init and r.get("tensors")]
        assert records
        for record in records:  # num_batches_tracked is PyTorch's own counter, not ported
            names = {n for kinds in record["tensors"].values() for group in kinds.values() for n in group}
            assert {s.name for s in specs} == {n for n in names if not n.endswith(".num_batches_tracked")}
        state = {"G": G.state_dict(), "D": D.state_dict()}
        assert all(s.torch_key in state[s.net] for s in specs)


def test_execution_order_and_flatten_shape():
    d = mixed_d()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    specs = port.torch_specs("D", d, torch.zeros(2, 3, 4, 4))
    assert port.layers_of(specs) == ["conv", "bn", "fc", "norm", "head"]
    flatten = {s.name: s.flatten for s in specs if s.flatten}
    assert flatten == {"D.fc.kernel": (4, 2, 2)}  # the head reads a 2-D activation: no permutation
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())  # the probe pass moved nothing
    # without an example: definition order, and no feature shape known
    assert port.layers_of(port.torch_specs("D", mixed_d()))[0] == "head"
    # a view() flattens as nn.Flatten does
    g_specs = port.torch_specs("G", MixedG(), torch.zeros(2, 5))
    assert [s.flatten for s in g_specs if s.role == "kernel"] == [None, None]


def test_unknown_layer_is_named():
    net = nn.Sequential(nn.Linear(3, 3), nn.PReLU())
    with pytest.raises(port.PortError, match=r"^G\.1\.weight: no port rule for torch layer type PReLU"):
        port.torch_specs("G", net)


def test_spec_json_round_trip():
    for spec in port.torch_specs("D", mixed_d(), torch.zeros(2, 3, 4, 4)):
        assert port.TensorSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(port.PortError, match="unknown fields"):
        port.TensorSpec.from_json({**spec.to_json(), "colour": 1})


def test_layouts_are_exact_inverses_and_flatten_matches_nhwc():
    rng = np.random.default_rng(0)

    def spec(shape, flatten=None):
        return port.TensorSpec("D.x.kernel", "D", "x", "Linear", "kernel", "param", shape, "x.weight", flatten)

    for shape in [(4, 3, 3, 3), (8, 5), (2, 3, 5)]:
        w = rng.standard_normal(shape)
        assert np.array_equal(port.from_keras(spec(shape), port.to_keras(spec(shape), w)), w)
    # a Linear over flattened NCHW features equals a Dense over flattened NHWC ones, exactly
    # (integer values: every sum is exact, whatever the order)
    x = rng.integers(-3, 4, (2, 3, 2, 4)).astype(np.float64)
    w = rng.integers(-3, 4, (5, 24)).astype(np.float64)
    s = spec(w.shape, (3, 2, 4))
    k = port.to_keras(s, w)
    assert np.array_equal(x.reshape(2, -1) @ w.T, x.transpose(0, 2, 3, 1).reshape(2, -1) @ k)
    assert np.array_equal(port.from_keras(s, k), w)


def test_a_transpose_layout_leaves_the_flattened_rows_in_torch_order():
    """LAYOUTS' "transpose": the kernel is the Linear weight transposed, which a Dense over
    flattened NCHW features matches and one over NHWC features does not; other tensors and
    the rules' layout are untouched, and a path that is no Linear is a PortError naming it."""
    specs = port.torch_specs("D", mixed_d(), torch.zeros(2, 3, 4, 4))
    linear = next(s for s in specs if s.layer_type == "Linear" and s.role == "kernel")
    assert linear.flatten is not None
    plain = port.with_layouts(specs, {linear.layer: "transpose"})
    assert [s.flatten for s in plain if s.name != linear.name] == [s.flatten for s in specs if s.name != linear.name]
    changed = next(s for s in plain if s.name == linear.name)
    w = np.arange(np.prod(linear.shape), dtype=np.float64).reshape(linear.shape)
    assert changed.flatten is None and np.array_equal(port.to_keras(changed, w), w.T)
    assert np.array_equal(port.from_keras(changed, port.to_keras(changed, w)), w)
    assert port.with_layouts(specs, {linear.layer: "rules"}) == specs
    conv = next(s for s in specs if s.layer_type == "Conv2d")
    with pytest.raises(port.PortError, match=f"^layout {conv.layer!r}: no Linear of that path; the net's Linears are"):
        port.with_layouts(specs, {conv.layer: "transpose"})


def test_torch_round_trip_is_bit_exact():
    d = mixed_d().double()
    specs = port.torch_specs("D", d, torch.zeros(2, 3, 4, 4, dtype=torch.float64))
    rng = np.random.default_rng(1)
    arrays = {s.name: rng.standard_normal(s.shape) for s in specs}
    port.torch_load(d, specs, arrays)
    out = port.torch_export(d, specs)
    assert all(np.array_equal(out[n], arrays[n]) for n in arrays)
    with pytest.raises(port.PortError, match=r"^D\.fc\.kernel: array of shape"):
        port.torch_load(d, specs, {**arrays, "D.fc.kernel": np.zeros((3, 3))})


# --- the Keras side, in each Keras engine's own process (it must not import torch)

def check_keras_port(engine, folder, nets, inputs, builder="compare.tests.port_child:keras_pair",
                     kernel_bound=0.5, **kwargs):
    """Port random weights (kernels uniform in +-``kernel_bound``) from the torch ``nets`` into
    the Keras pair ``builder`` makes, in the engine's own process: every tensor must come back
    bit for bit (rounded to float32), and each net's inference output must match torch's within
    the float32 tolerance."""
    from compare.parity import TOLERANCE
    from compare.runner import child_environment

    if ENGINES[engine].missing():
        pytest.skip(f"{engine}: {ENGINES[engine].install}")
    specs = {n: port.torch_specs(n, m, inputs[n]) for n, m in nets.items()}
    rng = np.random.default_rng(2)
    arrays = {}
    for net, module in nets.items():
        values = {s.name: rng.uniform(0.5, 1.5, s.shape) if s.role in ("gamma", "moving_variance")
                  else rng.uniform(-kernel_bound, kernel_bound, s.shape) if s.role == "kernel"
                  else rng.uniform(-0.5, 0.5, s.shape) for s in specs[net]}
        port.torch_load(module, specs[net], values)
        arrays.update(values)
    np.savez(folder / "in.npz", **arrays, **{f"x.{n}": x.numpy().astype(np.float64) for n, x in inputs.items()})
    (folder / "specs.json").write_text(json.dumps({n: [s.to_json() for s in v] for n, v in specs.items()}))
    env = dict(child_environment(engine, "float32"), COMPARE_ENGINE=engine)
    done = subprocess.run([sys.executable, "-c", f"from compare.tests.port_child import keras_side; "
                           f"keras_side({str(folder)!r}, {builder!r}, **{kwargs!r})"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(folder / "out.npz")
    # every tensor comes back as it went in, rounded to float32 and nothing else
    for name, value in arrays.items():
        assert np.array_equal(out[f"port.{name}"], value.astype(np.float32).astype(np.float64)), name
    for net, module in nets.items():
        module.eval()
        with torch.no_grad():
            expected = module(inputs[net]).numpy()
        assert np.max(np.abs(out[f"y.{net}"] - expected)) <= TOLERANCE["float32"], net
    assert bool(out["torch imported"][0]) == (engine == "keras-torch")


@pytest.mark.parametrize("engine", KERAS_ENGINES)
def test_keras_port_round_trip_and_forward(engine, tmp_path):
    check_keras_port(engine, tmp_path, {"G": MixedG(), "D": mixed_d()},
                     {"G": torch.randn(3, 5), "D": torch.randn(3, 3, 4, 4)})


@pytest.mark.parametrize("engine", KERAS_ENGINES)
def test_dcgan64_keras_port_matches_torch(engine, tmp_path):
    """The built-in DCGAN-64 pair, at small widths: its Keras port ('same' padding with a 4x4
    kernel and stride 2) computes what the torch modules compute. Kernels are drawn at the
    scale of PyTorch's default initialisation (fan-in 4 * 4 * 32 at most), so that the five
    layers neither saturate nor grow the float32 rounding past the tolerance."""
    from compare.models import dcgan64

    torch.manual_seed(0)
    nets = dict(zip("GD", dcgan64.build_torch(ngf=4, ndf=4)))
    inputs = {"G": torch.randn(2, *dcgan64.LATENT_SHAPE), "D": torch.randn(2, *dcgan64.IMAGE_SHAPE)}
    check_keras_port(engine, tmp_path, nets, inputs, "compare.models.dcgan64:build_keras", kernel_bound=0.05,
                     ngf=4, ndf=4)


def test_keras_pairing_errors():
    """The pairing's errors, on stand-ins with Keras's attributes (no framework needed)."""
    class Var:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Dense:
        def __init__(self, name, weights):
            self.name, self.weights = name, weights

    class Conv2D(Dense):
        pass

    class Model:
        def __init__(self, layers):
            self.layers = layers

    specs = port.torch_specs("D", nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1, bias=False)))
    good = Model([Dense("a", [Var("kernel", (3, 2)), Var("bias", (2,))]), Dense("b", [Var("kernel", (2, 1))])])
    assert port.keras_assignment(specs, good) == {"D.0.kernel": ("a", 0), "D.0.bias": ("a", 1), "D.1.kernel": ("b", 0)}
    swapped = Model([good.layers[1], good.layers[0]])
    with pytest.raises(port.PortError, match=r"^D\.0\.kernel: Keras 'b' kernel has shape \(2, 1\), expected \(3, 2\)"):
        port.keras_assignment(specs, swapped)
    assert port.keras_assignment(specs, swapped, {"0": "a", "1": "b"})["D.0.kernel"] == ("a", 0)
    with pytest.raises(port.PortError, match=r"^D\.1\.kernel: no Keras layer left"):
        port.keras_assignment(specs, Model(good.layers[:1]))
    with pytest.raises(port.PortError, match=r"^D\.0\.kernel: torch Linear '0' paired with Keras Conv2D"):
        port.keras_assignment(specs, Model([Conv2D("a", good.layers[0].weights), good.layers[1]]))
    with pytest.raises(port.PortError, match=r"^D\.0\.bias: Keras Dense 'a' has no bias"):
        port.keras_assignment(specs, Model([Dense("a", good.layers[0].weights[:1]), good.layers[1]]))
    extra = Model([good.layers[0], Dense("b", [Var("kernel", (2, 1)), Var("bias", (1,))])])
    with pytest.raises(port.PortError, match=r"^Keras Dense 'b' bias: no torch tensor maps to it"):
        port.keras_assignment(specs, extra)
    with pytest.raises(port.PortError, match=r"^override 'nope': no such tensor"):
        port.keras_assignment(specs, good, {"nope": "a"})
