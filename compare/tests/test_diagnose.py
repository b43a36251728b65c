"""The known causes of a divergence: what each reads from a faithful and from a mistaken pair,
and that each switch changes exactly its own setting.

The pairs are the DCGAN-64 pair and the mistaken example ports at widths 4 (the same
architecture, small). Keras runs in this process on the PyTorch backend, which is the
one backend that has both frameworks at hand; the readings are of configurations and
layer graphs, the same on every backend.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import numpy as np
import pytest

from compare.tests.locations import repository

torch = pytest.importorskip("torch")

EXAMPLES = {  # example file -> the cause its mistake is
    "dcgan64_keras_bn_defaults": ("bn-momentum", "bn-epsilon"),
    "dcgan64_same_padding": ("same-padding",),
    "dcgan64_bias_before_bn": ("bias-before-bn",),
    "dcgan64_bce_probabilities": ("bce-probabilities",),
    "dcgan64_dense_nhwc": ("flatten-order",),
}
FAILING = tuple(EXAMPLES)  # each example's check fails in float32 within two iterations
WIDTH = 4
# what every pair with a BatchNorm shows: PyTorch keeps the unbiased variance, Keras the biased
INTRINSIC = {"bn-variance-estimator"}


@pytest.fixture(scope="module")
def keras():
    if "keras" not in sys.modules:
        saved = os.environ.get("KERAS_BACKEND")
        os.environ["KERAS_BACKEND"] = "torch"
        try:
            module = pytest.importorskip("keras")
        finally:
            os.environ.pop("KERAS_BACKEND") if saved is None else os.environ.update(KERAS_BACKEND=saved)
    module = sys.modules["keras"]
    if not hasattr(module, "ops"):
        pytest.skip("needs Keras 3")
    module.backend.set_floatx("float32")
    return module


def example(name):
    """The source examples/``name``.py is (its module), its builders given widths ``WIDTH``."""
    from compare.check import pairfile, surgery

    module = pairfile.load(os.path.join(repository(), "examples", f"{name}.py"))
    return surgery.derive(module, build_torch=functools.partial(module.build_torch, WIDTH, WIDTH),
                          build_keras=functools.partial(module.build_keras, ngf=WIDTH, ndf=WIDTH))


def faithful():
    return example("dcgan64")


def pair_of(source):
    from compare.check import pairfile

    return pairfile.from_module("a test's pair", source)


def read(source, keras, dtype="float32"):
    """Every cause's reading of the pair ``source`` defines, the torch half sent as JSON."""
    from compare.check import diagnose

    pair = pair_of(source)
    torch_pair, keras_pair = pair.build_torch(), pair.build_keras(keras)
    torch_readings = json.loads(json.dumps(diagnose.read_torch_all(torch_pair, pair, dtype)))  # as it travels
    return diagnose.read_all(torch_readings, keras_pair, keras, pair, dtype)


def read_in_float64(source, keras):
    """``read`` with Keras's floatx float64 meanwhile (the readings of a float64 check)."""
    keras.backend.set_floatx("float64")
    try:
        return read(source, keras, "float64")
    finally:
        keras.backend.set_floatx("float32")


@functools.lru_cache(maxsize=None)
def readings_of(name, keras):
    """An example's readings, once per session (they are data)."""
    return read(example(name), keras)


def suspects(readings):
    return {cause for cause, reading in readings.items() if reading["suspect"]}


def test_faithful_pair_suspects_only_what_every_pair_has(keras):
    readings = read(faithful(), keras)
    assert suspects(readings) == INTRINSIC
    assert readings["bn-variance-estimator"]["torch"]["estimator"] == "unbiased"
    assert readings["bn-variance-estimator"]["keras"]["estimator"] == "biased"
    for t, k in zip(readings["bn-momentum"]["torch"]["G"], readings["bn-momentum"]["keras"]["G"]):
        assert k["momentum"] == 1 - t["momentum"] and k["epsilon"] == t["eps"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_mistaken_example_suspects_its_cause(keras, name):
    assert suspects(readings_of(name, keras)) == INTRINSIC | set(EXAMPLES[name])


def test_readings_show_the_mistakes(keras):
    defaults = keras.layers.BatchNormalization().get_config()
    bn = readings_of("dcgan64_keras_bn_defaults", keras)["bn-momentum"]
    assert {(b["momentum"], b["epsilon"]) for net in "GD" for b in bn["keras"][net]} == {
        (defaults["momentum"], defaults["epsilon"])}
    padding = readings_of("dcgan64_same_padding", keras)["same-padding"]
    first_t, first_k = padding["torch"]["D"][0], padding["keras"]["D"][0]
    from compare.check.diagnose import keras_pads, torch_pads

    assert torch_pads(first_t) == [(1, 1), (1, 1)] and keras_pads(first_t, first_k) == [(0, 1), (0, 1)]
    bias = readings_of("dcgan64_bias_before_bn", keras)["bias-before-bn"]
    assert [e["bn"] for e in bias["torch"]["D"]] == ["main.3", "main.6", "main.9"]
    assert len(bias["keras"]["D"]) == 3 and len(bias["torch"]["G"]) == len(bias["keras"]["G"]) == 4
    output = readings_of("dcgan64_bce_probabilities", keras)["bce-probabilities"]
    assert (output["torch"]["loss"], output["keras"]["loss"]) == ("logits", "probabilities")
    assert not output["torch"]["sigmoid"] and not output["keras"]["sigmoid"]  # D gives logits on both sides


SWITCHED = [(name, cause) for name, causes in sorted(EXAMPLES.items()) for cause in causes] + [
    ("dcgan64_bias_before_bn", "bn-variance-estimator")]


@pytest.mark.parametrize("name,cause", SWITCHED)
def test_switch_changes_exactly_its_cause(keras, name, cause):
    from compare.check import diagnose

    before = readings_of(name, keras)
    switched = diagnose.switch(cause, example(name), before[cause])
    after = read(switched, keras)
    assert not after[cause]["suspect"]
    for other in diagnose.CAUSES:
        if other.id == cause:
            continue
        assert after[other.id]["suspect"] == before[other.id]["suspect"], other.id
        if not {cause, other.id} <= BN_SETTINGS:  # these read one another's settings
            assert settings(after[other.id]) == settings(before[other.id]), other.id


BN_SETTINGS = {"bn-momentum", "bn-epsilon", "bn-variance-estimator"}
KERAS_NAMES = ("layer", "last_layer", "bn", "index", "flatten", "permute")


def settings(reading):
    """A reading without Keras layer names and positions (automatic names differ from one
    build to the next, and an explicit padding layer moves the positions after it)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in KERAS_NAMES}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return {"torch": reading["torch"], "keras": strip(reading["keras"]), "suspect": reading["suspect"]}


def ported(source, keras):
    """The pair built on both sides with torch's weights ported to Keras."""
    from compare import port

    pair = pair_of(source)
    torch_pair, keras_pair = pair.build_torch(), pair.build_keras(keras)
    for net, module, model, shape in zip("GD", torch_pair, keras_pair, (pair.latent_shape, pair.image_shape)):
        specs = port.with_layouts(port.torch_specs(net, module, torch.zeros((2, *shape))), pair.layouts.get(net))
        port.keras_load(model, specs, port.keras_assignment(specs, model), port.torch_export(module, specs))
    return torch_pair, keras_pair


def forward_difference(source, keras, net="D", training=True):
    """Largest |torch - Keras| of ``net``'s output (NCHW) on one random batch, in float32."""
    torch_pair, keras_pair = ported(source, keras)
    shape = source.IMAGE_SHAPE if net == "D" else source.LATENT_SHAPE
    x = np.random.default_rng(0).uniform(-1, 1, (4, *shape)).astype(np.float32)
    module, model = torch_pair["GD".index(net)].train(training), keras_pair["GD".index(net)]
    with torch.no_grad():
        expected = module(torch.as_tensor(x)).numpy()
    got = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=training))
    if got.ndim == 4:
        got = got.transpose(0, 3, 1, 2)
    return float(np.max(np.abs(expected - got.reshape(expected.shape))))


@pytest.mark.parametrize("name,cause,net", [("dcgan64_same_padding", "same-padding", "D"),
                                            ("dcgan64_keras_bn_defaults", "bn-epsilon", "G")])
def test_switch_removes_the_forward_difference(keras, name, cause, net):
    from compare.check import diagnose
    from compare.parity import TOLERANCE

    pair = example(name)
    assert forward_difference(pair, keras, net) > 100 * TOLERANCE["float32"]
    switched = diagnose.switch(cause, pair, readings_of(name, keras)[cause])
    assert forward_difference(switched, keras, net) <= TOLERANCE["float32"]


def test_switches_keep_every_tensor_name_but_the_removed_biases(keras):
    from compare import port
    from compare.check import diagnose

    def names(source):
        nets = source.build_torch()
        return {s.name for net, m, shape in zip("GD", nets, (source.LATENT_SHAPE, source.IMAGE_SHAPE))
                for s in port.torch_specs(net, m, torch.zeros((2, *shape)))}

    for name, cause in SWITCHED:
        pair = example(name)
        seen = readings_of(name, keras)
        removed = names(pair) - names(diagnose.switch(cause, pair, seen[cause]))
        biases = {f"{net}.{e['layer']}.bias" for net in "GD" for e in seen["bias-before-bn"]["torch"][net]}
        assert removed == (biases if cause == "bias-before-bn" else set()), (name, cause)


def test_adam_switches_change_only_their_settings(keras):
    from compare.check import diagnose

    given = {"torch": {"lr": 2e-4, "beta_1": 0.5, "beta_2": 0.999, "eps": 1e-8},
             "keras": {"lr": 2e-4, "beta_1": 0.5, "beta_2": 0.999, "eps": 1e-7}}
    pair = diagnose.surgery.derive(faithful(), OPTIMIZER=given)
    readings = read(pair, keras, "float64")
    assert readings["adam-epsilon"]["suspect"]
    eps_off = diagnose.switch("adam-epsilon", pair, readings["adam-epsilon"])
    assert eps_off.OPTIMIZER == {side: {**given[side], "eps": diagnose.NEGLIGIBLE_EPS} for side in given}
    constants = diagnose.switch("adam-constants", pair, readings["adam-constants"])
    for side in ("torch", "keras"):
        assert constants.OPTIMIZER[side]["eps"] == given[side]["eps"]
        assert constants.OPTIMIZER[side]["beta_2"] == float(np.float32(0.999)) != 0.999
        assert constants.OPTIMIZER[side]["lr"] == float(np.float32(2e-4))


def test_training_flag_is_read_from_the_calls_and_switched_on(keras):
    from compare.check import diagnose

    source = faithful()
    pair = pair_of(source)
    torch_pair, keras_pair = pair.build_torch(), pair.build_keras(keras)
    z = np.zeros((2, 1, 1, pair.latent_shape[0]), dtype=np.float32)
    keras_pair[1](keras_pair[0](z, training=False), training=False)  # the check's own calls: not recorded
    with diagnose.recording(keras_pair):
        keras_pair[1](keras_pair[0](z))  # a user's step that leaves training out
    context = diagnose.Context.of(pair)
    cause = diagnose.BY_ID["training-flag"]
    reading = cause.read(torch_pair, keras_pair, keras, context)
    assert reading["suspect"] and reading["keras"]["G"]["calls"] == ["None"]
    switched = cause.switch(source, reading)
    G, D = switched.build_keras(keras)
    before = keras.ops.convert_to_numpy(G.layers[1].moving_mean).copy()
    with diagnose.recording((G, D)):
        G(np.random.default_rng(0).standard_normal(z.shape).astype(np.float32))  # training left out again
    assert not np.array_equal(keras.ops.convert_to_numpy(G.layers[1].moving_mean), before)  # BN trained
    watched = cause.read(torch_pair, (G, D), keras, context)
    assert watched["keras"]["G"]["calls"] == ["None"]  # what the user's code passed, recorded as passed


def test_flatten_order_is_read_from_the_keras_graph(keras):
    from compare.check import diagnose

    mistaken = example("dcgan64_dense_nhwc")  # its converter's plain transpose (LAYOUTS)
    seen = read(mistaken, keras)["flatten-order"]
    assert seen["suspect"] and seen["torch"]["D"][0]["ported_as"] == "CHW" != seen["keras"]["D"][0]["order"]
    assert forward_difference(mistaken, keras, "D") > 1e-3
    fixed = diagnose.switch("flatten-order", mistaken, seen)
    assert fixed.LAYOUTS == {"G": {}, "D": {}} and not read(fixed, keras)["flatten-order"]["suspect"]
    assert forward_difference(fixed, keras, "D") <= 1e-5

    pair = diagnose.surgery.derive(mistaken, LAYOUTS={})  # the port's rule
    readings = read(pair, keras)
    flatten = readings["flatten-order"]
    assert flatten["torch"]["D"][0]["features"] == [WIDTH * 8, 4, 4]
    assert flatten["keras"]["D"][0]["order"] == "HWC" == flatten["torch"]["D"][0]["ported_as"]
    assert not flatten["suspect"]
    assert forward_difference(pair, keras, "D") <= 1e-5  # the port permutes the Dense kernel's rows

    def channels_first(net, model, keras):  # a Keras D that flattens C, H, W
        if net != "D":
            return None
        by_id = diagnose.surgery.at_positions(model, {flatten["keras"]["D"][0]["flatten"]: True})
        return diagnose.surgery.clone_keras(model, keras, lambda layer, config: keras.Sequential(
            [keras.layers.Permute((3, 1, 2)), keras.layers.Flatten()], name="chw") if id(layer) in by_id else None)

    permuted = diagnose.surgery.derive(pair, build_keras=diagnose.surgery.keras_builder(pair, channels_first))
    seen = read(permuted, keras)["flatten-order"]
    assert seen["suspect"] and seen["keras"]["D"][0]["order"] == "CHW"
    assert forward_difference(permuted, keras, "D") > 1e-3
    fixed = diagnose.switch("flatten-order", permuted, seen)
    assert not read(fixed, keras)["flatten-order"]["suspect"]
    assert forward_difference(fixed, keras, "D") <= 1e-5


def test_float64_reading_measures_the_computed_precision(keras):
    """Keras 3 on the PyTorch backend keeps float64 variables but normalises in float32."""
    pair = faithful()
    seen = read_in_float64(pair, keras)["float64-not-computed"]
    promotes = keras.backend.result_type("float64", "float32") == "float32"
    assert seen["keras"]["BN computes on the float32 grid"] == promotes
    assert seen["suspect"] == promotes


def expected_places(name, keras):
    """Where each example's mistake first shows, read from the example itself: the torch
    layers (net, module path) or tensors its cause's reading names."""
    from compare.check import diagnose

    seen = readings_of(name, keras)
    if name == "dcgan64_same_padding":
        mismatched = {(net, a["layer"]) for net in "GD"
                      for a, _ in diagnose.mismatched_convs(seen["same-padding"]["torch"], seen["same-padding"]["keras"], net)}
        return {"layers": mismatched}
    if name == "dcgan64_keras_bn_defaults":
        return {"layers": {(net, b["layer"]) for net in "GD" for b in seen["bn-epsilon"]["torch"][net]}}
    if name == "dcgan64_bce_probabilities":  # D's first loss: the real batch's
        return {"tensors": {"D_real"}}
    if name == "dcgan64_dense_nhwc":
        return {"layers": {("D", a["layer"]) for a in seen["flatten-order"]["torch"]["D"]}}
    return {"tensors": {f"{net}.{e['layer']}.bias" for net in "GD" for e in seen["bias-before-bn"]["torch"][net]}}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["keras-torch"])
@pytest.mark.parametrize("name", sorted(FAILING))
def test_mistaken_example_fails_where_its_mistake_is_with_its_cause_confirmed(engine, name, keras, tmp_path):
    """The check of each small mistaken example: FAIL, the first divergence at the layer (or
    tensor) of the mistake, and the mistake's cause among those its counterfactuals confirmed."""
    from compare.tests.test_check import check_example, small

    places = expected_places(name, keras)
    result = check_example(small(tmp_path, f"{name}.py", 8, 8), engine)
    assert result.verdict == "FAIL" and result.exit_code == 1, result.summary()
    first = result.first_divergence(engine)
    if "layers" in places:
        assert (first["net"], first["layer"]) in places["layers"], first
    else:
        assert first["tensor"] in places["tensors"], first
    assert set(EXAMPLES[name]) <= set(result.confirmed(engine)), result.engines[engine]["causes"]


def test_float32_constants_are_read_from_the_ops_and_given_to_torch(keras):
    """The rule's reading: each LeakyReLU slope and BN weight as set on both sides and as the
    Keras ops apply them (measured on fresh layers in float64); its switch gives PyTorch's
    modules what Keras applies, and nothing else."""
    from compare.check import diagnose

    pair = faithful()
    seen = read_in_float64(pair, keras)["float32-constants"]
    assert [a["slope"] for a in seen["torch"]["D"]["leaky_relu"]] == [0.2] * 4
    assert [a["momentum"] for a in seen["torch"]["G"]["bn"]] == [0.1] * 4
    applied = diagnose.applied_constants(seen["keras"])
    assert len(applied) == 4 + 7 and all(a in (v, float(np.float32(v))) for v, a in applied), applied
    assert seen["suspect"] == any(a != v for v, a in applied)
    G, D = diagnose.switch("float32-constants", pair, {**seen, "keras": {
        "G": {"leaky_relu": [], "bn": [{"set": 0.1, "applied": 0.25}] * 4},
        "D": {"leaky_relu": [{"set": 0.2, "applied": 0.5}] * 4, "bn": [{"set": 0.1, "applied": 0.1}] * 3}}}).build_torch()
    assert [m.negative_slope for m in D.modules() if isinstance(m, torch.nn.LeakyReLU)] == [0.5] * 4
    assert [m.momentum for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [0.25] * 4
    assert [m.momentum for m in D.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [0.1] * 3
    assert not read(pair, keras, "float32")["float32-constants"]["suspect"]  # in float32 they are one number
