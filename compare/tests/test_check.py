"""``compare check``: a user's pair file, the staged comparison and its localisation, the verdicts,
the command line, and the check itself on the example pairs in every Keras engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from compare.check import pairfile, verdict
from compare.check.pairfile import PairError
from compare.engines import ENGINES
from compare.parity import TOLERANCE
from compare.runner import PACKAGE_ROOT
from compare.tests.plugin import KERAS_ENGINES

EXAMPLES = os.path.join(PACKAGE_ROOT, "examples")
have_examples = pytest.mark.skipif(not os.path.isdir(EXAMPLES), reason="the examples are in the source checkout")


def source(**changes):
    """A well-formed pair source (no framework is touched: the builders are never called)."""
    values = dict(build_torch=lambda: None, build_keras=lambda keras: None, LATENT_SHAPE=(4,),
                  IMAGE_SHAPE=(1, 2, 2))
    values.update(changes)
    return types.SimpleNamespace(**{k: v for k, v in values.items() if v is not None})


def test_pair_defaults_and_settings():
    pair = pairfile.from_module("f.py", source())
    assert pair.batch == 8 and pair.d_output == {"torch": None, "keras": None} and pair.dtype is None
    assert pair.optimizer["torch"] == pair.optimizer["keras"] == pairfile.DEFAULT_ADAM
    pair = pairfile.from_module("f.py", source(OPTIMIZER={"torch": {"eps": 1e-8}, "keras": {"lr": 0.5}},
                                               D_OUTPUT="probabilities"))
    assert pair.optimizer["torch"]["eps"] == 1e-8 and pair.optimizer["keras"]["lr"] == 0.5
    assert pair.optimizer["keras"]["eps"] == pairfile.DEFAULT_ADAM["eps"]
    assert pair.d_output == {"torch": "probabilities", "keras": "probabilities"}


@pytest.mark.parametrize("changes, message", [
    ({"build_torch": 3}, "build_torch must be a function, not int"),
    ({"build_keras": None}, "build_keras must be a function, not NoneType"),
    ({"LATENT_SHAPE": None}, "defines no LATENT_SHAPE"),
    ({"IMAGE_SHAPE": (3, 0, 4)}, r"IMAGE_SHAPE must be a tuple of positive whole numbers, not \(3, 0, 4\)"),
    ({"LATENT_SHAPE": "100"}, "LATENT_SHAPE must be a tuple of positive whole numbers"),
    ({"BATCH": 1}, "BATCH must be a whole number of at least 2"),
    ({"OPTIMIZER": {"learning_rate": 1}}, r"OPTIMIZER has unknown keys 'learning_rate'; valid: lr, beta_1"),
    ({"OPTIMIZER": {"lr": -1}}, r"OPTIMIZER\['lr'\] must be a number of at least 0"),
    ({"OPTIMIZER": {"torch": {}, "jax": {}}}, "OPTIMIZER has unknown keys 'jax'"),
    ({"OPTIMIZER": [1]}, "OPTIMIZER must be a dict of lr, beta_1, beta_2, eps"),
    ({"D_OUTPUT": "sigmoid"}, "D_OUTPUT must be one of 'logits', 'probabilities', not 'sigmoid'"),
    ({"DTYPE": "float16"}, "DTYPE must be one of 'float32', 'float64'"),
    ({"OVERRIDES": {"X": {}}}, "OVERRIDES must be"),
    ({"LAYOUTS": {"D": {"main.11.1": "permuted"}}}, "LAYOUTS must be"),
    ({"LAYOUTS": ["main.11.1"]}, "LAYOUTS must be"),
    ({"train_step_torch": "no"}, "train_step_torch must be a function"),
])
def test_malformed_pair_is_one_line(changes, message):
    with pytest.raises(PairError, match=f"^f.py: {message}") as caught:
        pairfile.from_module("f.py", source(**changes))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("def build_torch(:\n", r":1: syntax error"),
    ("LATENT_SHAPE = 1\n", "defines no build_torch, build_keras, IMAGE_SHAPE"),
    ("raise RuntimeError('boom')\n" + "".join(f"{n} = 1\n" for n in (
        "build_torch", "build_keras", "LATENT_SHAPE", "IMAGE_SHAPE")), "importing it raised RuntimeError: boom"),
])
def test_malformed_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "pair.py"
    path.write_text(text)
    with pytest.raises(PairError, match=message):
        pairfile.load(str(path))
    with pytest.raises(PairError, match="no such file"):
        pairfile.load(str(tmp_path / "missing.py"))


def fake_run(tmp_path, name: str, arrays: dict):
    np.savez(tmp_path / f"{name}.npz", **arrays)
    return np.load(tmp_path / f"{name}.npz")


def small_facts():
    from compare.port import TensorSpec

    specs = {"G": [TensorSpec("G.fc.kernel", "G", "fc", "Linear", "kernel", "param", (2, 2), "fc.weight"),
                   TensorSpec("G.bn.gamma", "G", "bn", "BatchNorm1d", "gamma", "param", (2,), "bn.weight")],
             "D": [TensorSpec("D.fc.kernel", "D", "fc", "Linear", "kernel", "param", (1, 2), "fc.weight")]}
    ref = {"specs": {n: [s.to_json() for s in v] for n, v in specs.items()}, "bn": {},
           "bn_estimator": {"estimator": "unbiased"}}
    keras = {"bn_estimator": {"estimator": "unbiased", "on_float32_grid": False}, "precision_probes": {},
             "keras_layers": {"G.fc": "dense", "G.bn": "batch_normalization", "D.fc": "dense_1"}}
    return ref, keras


def test_first_divergence_is_the_first_layer_out_of_tolerance(tmp_path):
    """A forward pass whose later layers all differ is located at the first one that does."""
    ref_facts, facts = small_facts()
    base = {"forward.G.eval/output/G.fc": np.zeros(3), "forward.G.eval/output/G.bn": np.zeros(3),
            "forward.G.eval/output/G": np.zeros(3), "iteration.1/param/G.fc.kernel": np.zeros((2, 2)),
            "iteration.1/loss/G": np.zeros(1)}
    moved = dict(base)
    moved["forward.G.eval/output/G.fc"] = np.full(3, TOLERANCE["float32"] / 2)  # within tolerance
    for key in ("forward.G.eval/output/G.bn", "forward.G.eval/output/G", "iteration.1/param/G.fc.kernel"):
        moved[key] = base[key] + 1.0
    result = verdict.compare_side("float32", 1, ref_facts, fake_run(tmp_path, "ref", base), facts,
                                  fake_run(tmp_path, "keras", moved), {})
    assert result["verdict"] == "FAIL"
    assert result["first_divergence"] == {
        "stage": "forward.G.eval", "iteration": None, "net": "G", "layer": "bn", "keras_layer": "batch_normalization",
        "tensor": "G.bn", "quantity": "output", "max_abs_diff": 1.0, "tolerance": TOLERANCE["float32"]}
    same = verdict.compare_side("float32", 1, ref_facts, fake_run(tmp_path, "ref", base), facts,
                                fake_run(tmp_path, "same", dict(base)), {})
    assert same["verdict"] == "PASS" and same["first_divergence"] is None
    # a tensor the Keras side lacks is a divergence, not a pass; NaN never agrees
    missing = {k: v for k, v in base.items() if k != "iteration.1/param/G.fc.kernel"}
    result = verdict.compare_side("float32", 1, ref_facts, fake_run(tmp_path, "ref", base), facts,
                                  fake_run(tmp_path, "missing", missing), {})
    assert result["first_divergence"]["tensor"] == "G.fc.kernel" and result["first_divergence"]["iteration"] == 1
    nan = {**base, "iteration.1/loss/G": np.array([np.nan])}
    result = verdict.compare_side("float32", 1, ref_facts, fake_run(tmp_path, "ref", base), facts,
                                  fake_run(tmp_path, "nan", nan), {})
    assert result["first_divergence"]["quantity"] == "loss"


def test_gradients_are_searched_from_the_loss_backwards():
    ref_facts, _ = small_facts()
    from compare.port import TensorSpec

    specs = {s["name"]: TensorSpec.from_json(s) for net in ("G", "D") for s in ref_facts["specs"][net]}
    keys = [f"gradients/gradient/{n}" for n in ("G.fc.kernel", "G.bn.gamma", "D.fc.kernel")]
    assert verdict.ordered_keys("gradients", "gradient", keys, specs, []) == [
        "gradients/gradient/D.fc.kernel", "gradients/gradient/G.bn.gamma", "gradients/gradient/G.fc.kernel"]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "compare", "check", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": PACKAGE_ROOT, **(env or {})}, timeout=120)


@have_examples
@pytest.mark.parametrize("args, message", [
    (["missing.py"], "missing.py: no such file"),
    (["{toy}", "--engines", "nope"], "unknown engine nope"),
    (["{toy}", "--engines", "torch"], "no Keras engine given"),
    (["{toy}", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["{toy}", "--iterations", "0"], "is not a whole number of at least 1"),
    (["{toy}", "--out", "{file}"], "is a file; give a folder"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    file = tmp_path / "a-file"
    file.write_text("")
    args = [a.format(toy=os.path.join(EXAMPLES, "toy.py"), file=file) for a in args]
    done = run_cli(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


def small(tmp_path, name: str, *sizes) -> str:
    """A pair file that is example ``name`` with its builders given ``sizes`` (widths)."""
    module = name[:-3]
    path = tmp_path / f"small_{name}"
    path.write_text(f"import sys\nsys.path.insert(0, {EXAMPLES!r})\nfrom {module} import *  # noqa\n"
                    f"from {module} import build_keras as keras_builder, build_torch as torch_builder\n\n\n"
                    f"def build_torch():\n    return torch_builder(*{sizes!r})\n\n\n"
                    f"def build_keras(keras):\n    return keras_builder(keras, *{sizes!r})\n")
    return str(path)


def check_example(file, engine, dtype="float32", iterations=2, **options):
    """The check of one pair file in one Keras engine (skipped where the engine is not installed)."""
    import compare

    if ENGINES[engine].missing():
        pytest.skip(f"{engine}: {ENGINES[engine].install}")
    return compare.check(file, engines=[engine], dtype=dtype, iterations=iterations, **options)


CHECKS = {}  # (test, its parameters but the engine) -> the check that every engine's test reads


def shared_check(request, make_file, dtype="float32", iterations=2, **options):
    """One check of a pair file on every Keras engine the selected tests of this test (same
    parameters but the engine) ask for: the reference runs once and the engines two at a
    time. The calling test's engine is skipped where it is not installed."""
    import compare

    engine = request.node.callspec.params["engine"]
    if ENGINES[engine].missing():
        pytest.skip(f"{engine}: {ENGINES[engine].install}")

    def others(item):
        params = dict(getattr(item, "callspec", None).params) if hasattr(item, "callspec") else {}
        return {k: v for k, v in params.items() if k != "engine"}

    key = (request.node.originalname, repr(sorted(others(request.node).items())))
    if key not in CHECKS:
        wanted = [item.callspec.params["engine"] for item in request.session.items
                  if getattr(item, "originalname", None) == key[0] and others(item) == others(request.node)]
        engines = [e for e in KERAS_ENGINES if e in wanted and not ENGINES[e].missing()]
        folder = request.getfixturevalue("tmp_path_factory").mktemp("check")
        CHECKS[key] = compare.check(make_file(folder), engines=engines, dtype=dtype, iterations=iterations, **options)
    return CHECKS[key]


def assert_passes(result, engine, dtype):
    entry = result.engines[engine]
    assert entry["verdict"] == "PASS", result.summary()
    # the reference reproduced itself, and every stage compared something within the tolerance
    assert result.data["reference"]["reproduces"]["max_abs_diff"] <= TOLERANCE[dtype]
    assert {s["stage"] for s in entry["stages"]} >= {"structure", "forward.D.train", "gradients", "iteration.1"}
    assert all(s["judged_diff"] <= s["tolerance"] for s in entry["stages"])
    assert entry["first_divergence"] is None
    return entry


@have_examples
@pytest.mark.parametrize("engine", KERAS_ENGINES)
def test_toy_pair_passes(engine, request):
    result = shared_check(request, lambda folder: os.path.join(EXAMPLES, "toy.py"), out=None)
    assert_passes(result, engine, "float32")


@have_examples
@pytest.mark.parametrize("engine", ["keras-torch"])
def test_the_pages_are_written(tmp_path, engine):
    """check.json, check.md and check.html from one real check (one engine, one iteration)."""
    result = check_example(os.path.join(EXAMPLES, "toy.py"), engine, iterations=1, out=str(tmp_path))
    with open(tmp_path / "check.json") as f:
        data = json.load(f)
    assert data["verdict"] == result.verdict == "PASS" and data["engines"][engine]["first_divergence"] is None
    assert "Verdict: **PASS**" in (tmp_path / "check.md").read_text()
    assert "<table>" in (tmp_path / "check.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["keras-jax"])
def test_reading_a_keras_configuration_loads_no_tensorflow(engine):
    """Keras 3 imports TensorFlow, where it is installed, to serialise a configuration; the
    check's Keras process on another backend reads configurations without loading it."""
    if ENGINES[engine].missing():
        pytest.skip(f"{engine}: {ENGINES[engine].install}")
    from compare.runner import child_environment

    code = ("import json, sys, keras\n"
            "from compare.check.keras_side import plain_config, tensorflow_only_when_loaded\n"
            "tensorflow_only_when_loaded()\n"
            "config = plain_config(keras.layers.Flatten())\n"
            "print(json.dumps([config.get('data_format'), 'tensorflow' in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", code], env=child_environment(engine, "float32"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["channels_last", False]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["keras-torch"])
def test_a_reference_that_fails_ends_the_engine_waiting_for_it(tmp_path, engine):
    """A Keras process builds its pair while the reference runs; where the reference gives no
    result it is told so and ends at once (not at its time limit), and the check says why
    the engine did not run."""
    pair = tmp_path / "pair.py"
    pair.write_text("from compare.models.toy import IMAGE_SHAPE, LATENT_SHAPE, build_keras\n"
                    "from compare.models.toy import build_torch as toy_torch\n\n\n"
                    "def build_torch():\n"
                    "    G, D = toy_torch()\n\n"
                    "    def broken(grad):  # G runs forward, so the file is a pair; its backward breaks\n"
                    "        raise RuntimeError('G cannot run backward')\n"
                    "    next(G.parameters()).register_hook(broken)\n"
                    "    return G, D\n")
    lines = []
    result = check_example(str(pair), engine, iterations=1, progress=lines.append, timeout=300)
    assert result.verdict == "ABSTAIN" and result.data["reference"]["status"] == "failed"
    assert "G cannot run backward" in result.data["reference"]["reason"]
    entry = result.engines[engine]
    assert entry["status"] == "not run" and entry["reason"].startswith("the reference failed")
    assert any(line.startswith(f"[{engine} ") and line.endswith("the reference gave no result") for line in lines)


@have_examples
@pytest.mark.slow
@pytest.mark.parametrize("engine", KERAS_ENGINES)
@pytest.mark.parametrize("name, sizes", [("dcgan64.py", (4, 4)), ("mlp_bn1d.py", (16,)), ("conv_leaky.py", (4,))])
def test_faithful_pairs_pass_in_float32(engine, name, sizes, request):
    """The DCGAN-64 port, and two pairs no rule was written for, pass without a package change."""
    assert_passes(shared_check(request, lambda folder: small(folder, name, *sizes)), engine, "float32")


# Keras on PyTorch's float64 conv backward stops with "slow_conv2d: grad_weight must be contiguous":
# measured on the installed versions, a finding the check reports as that engine's failure
FLOAT64_GAPS = {
    "keras-torch": "torch's float64 conv backward raises under Keras (grad_weight must be contiguous)",
}


@have_examples
@pytest.mark.slow
@pytest.mark.parametrize("engine", [pytest.param(e, marks=pytest.mark.xfail(strict=True, reason=FLOAT64_GAPS[e]))
                                    if e in FLOAT64_GAPS else e for e in KERAS_ENGINES])
def test_faithful_dcgan64_in_float64(engine, request):
    """float64: within 1e-9 where the backend computes in float64, or under a named rule whose
    op-level evidence the engine measured: the float64 rule (Keras 3 on JAX and PyTorch
    computes float64 in float32: float32's tolerance), and the float32-constants rule (a
    LeakyReLU slope or BN weight the Keras ops apply, measured on fresh layers, is the set
    one rounded to float32: PyTorch given what they apply, every stage is within 1e-9)."""
    result = shared_check(request, lambda folder: small(folder, "dcgan64.py", 4, 4), dtype="float64")
    entry = assert_passes(result, engine, "float64")
    if entry["rule"] is None:
        assert entry["tolerance"] == TOLERANCE["float64"]
    else:
        assert entry["rule"] == "keras-float64-to-float32" and entry["tolerance"] == TOLERANCE["float32"]
    applied = entry.get("rules_applied", [])
    assert applied in ([], ["float32-constants"])
    if applied:  # the rule's op-level facts: what the ops applied is the constant rounded to float32
        (cause,) = [c for c in entry["causes"] if c["id"] == "float32-constants"]
        from compare.check.diagnose import applied_constants

        seen = applied_constants(cause["keras"])
        assert all(applied in (value, float(np.float32(value))) for value, applied in seen), seen
        assert any(applied != value for value, applied in seen), seen
        assert cause["confirmed"] and cause["residual"] <= TOLERANCE["float64"]
        assert entry["first_divergence_without_rules"]["max_abs_diff"] > TOLERANCE["float64"]
    if engine in ("keras-tensorflow", "tf-keras"):  # TensorFlow computes float64: no precision rule
        assert entry["rule"] is None


@have_examples
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["keras-torch"])
def test_the_pytest_fixture_passes_a_faithful_pair_and_fails_a_mistaken_one(tmp_path, engine):
    if ENGINES["keras-torch"].missing():
        pytest.skip(f"keras-torch: {ENGINES['keras-torch'].install}")
    (tmp_path / "test_ours.py").write_text(
        "def test_faithful(port_check):\n"
        f"    assert port_check({os.path.join(EXAMPLES, 'toy.py')!r}, engines='keras-torch', iterations=1).passed\n"
        "def test_mistaken(port_check):\n"
        f"    port_check({small(tmp_path, 'dcgan64_keras_bn_defaults.py', 4, 4)!r}, engines='keras-torch',\n"
        "               iterations=1, diagnosis=False)\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "compare.pytest_plugin", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_ours.py")], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": PACKAGE_ROOT}, timeout=900)
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-3000:]
    assert "compare check" in done.stdout and "keras-torch: FAIL at stage forward.G.eval" in done.stdout


def test_an_engine_passes_under_a_rule_only_where_rules_alone_explain_it():
    from compare.check import run

    first = {"stage": "forward.D.eval", "tensor": "D.main.2", "max_abs_diff": 2e-9}
    after = [{"stage": "iteration.1", "judged_diff": 1e-16, "tolerance": 1e-9}]

    def entry(*causes):
        return {"verdict": "FAIL", "first_divergence": first, "stages": [{"stage": "raw"}],
                "causes": [{"id": i, "confirmed": ok, "residual": 1e-16, "verdict_after": v, "stages_after": after}
                           for i, ok, v in causes]}

    ruled = entry(("bn-variance-estimator", False, "FAIL"), ("float32-constants", True, "PASS"))
    run.passes_under_rules(ruled)
    assert ruled["verdict"] == "PASS" and ruled["first_divergence"] is None and ruled["stages"] == after
    assert ruled["first_divergence_without_rules"] == first and ruled["rules_applied"] == ["float32-constants"]
    for causes in [(("bn-epsilon", True, "FAIL"), ("float32-constants", True, "PASS")),  # a mistake too
                   (("float32-constants", True, "FAIL"),),  # the rule's run still fails somewhere
                   (("float32-constants", False, "FAIL"),)]:
        mistaken = entry(*causes)
        run.passes_under_rules(mistaken)
        assert mistaken["verdict"] == "FAIL" and mistaken["first_divergence"] == first
