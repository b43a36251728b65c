"""The scenario catalog: the single source of truth for the runner, the report and the tests.

A scenario is one training-step idiom: an id, the question it answers, its sources, the
claims it tests, and one implementation per engine (or the reason it does not apply).
Implementations are plain functions of a ``Context`` (see ``compare.observe``), written
as a user of that framework would write them; they import their framework inside the
function, so the catalog itself can be imported without any framework. The report quotes
the implementations' source, so what it shows is the code that ran.

Claims are what a source says, as a predicate on the observation; their verdicts come
from runs, never from here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import textwrap
from typing import Callable, Dict, List, Optional, Sequence

ENGINE_IDS = ("torch", "keras-tensorflow", "keras-jax", "keras-torch", "tf-keras")
KERAS_IDS = ("keras-tensorflow", "keras-jax", "keras-torch", "tf-keras")
KERAS_3_IDS = ("keras-tensorflow", "keras-jax", "keras-torch")
MODULES = ("compare.scenarios.scope", "compare.scenarios.freeze", "compare.scenarios.detach")

SOURCES = {
    "article-1": "koshian, 'PyTorchでGANの訓練をするときにrequires_grad(trainable)の変更はいるのかどうか' "
                 "(2019-09-24): is requires_grad switching needed when training a GAN in PyTorch?",
    "article-2": "Qiita, 'GANの訓練ループでよく見るdetachは何をしている?': what does detach do in GAN loops?",
    "inside-deep-learning": "Inside Deep Learning, GAN notebook comment quoted in article-2: "
                            "'Why do we detach here? Because we don't want the gradient to impact G.'",
    "pytorch-dcgan": "PyTorch examples, dcgan/main.py: optimizerD / optimizerG, fake.detach() in the D step",
    "torch-docs-zero-grad": "PyTorch docs, torch.optim.Optimizer.zero_grad(set_to_none=True): torch.optim "
                            "optimizers behave differently for a zero gradient (they take the step with it) "
                            "and a None gradient (they skip the step)",
    "torch-docs-backward": "PyTorch docs, torch.Tensor.backward(retain_graph=False): the graph is freed "
                           "after backward unless retain_graph=True",
    "keras-docs-trainable": "Keras guide 'Transfer learning & fine-tuning': trainable=False moves weights "
                            "to non_trainable_weights; BatchNormalization with trainable=False runs in "
                            "inference mode and stops updating its mean and variance",
    "keras-2-compile-note": "Keras 2 FAQ, 'How can I \"freeze\" Keras layers?': trainable can be changed after "
                            "a layer is created, but the change only takes effect once compile() is called on "
                            "the model; its example shares one layer between a model compiled while the layer "
                            "was frozen (fit leaves the layer alone) and one compiled while it was trainable "
                            "(fit updates it)",
    "keras-3-trainable": "Keras 3 docs, Layer.trainable setter: sets trainable on the layer and all its "
                         "sublayers; if it is changed during training, the parent model's "
                         "make_train_function(force=True) must be called to rebuild the training graph",
    "keras-3-compile": "Keras 3 Model.compile docstring (note) and keras.io guide 'Transfer learning & "
                       "fine-tuning': trainable variables are fixed when compile() is called; a trainable "
                       "value changed afterwards takes effect only when compile() is called again (the "
                       "docstring says so for every backend)",
    "keras-gan-lindernoren": "eriklindernoren/Keras-GAN, gan/gan.py: D is compiled, then "
                             "discriminator.trainable = False ('For the combined model we will only train the "
                             "generator') before the combined model is built and compiled; one Adam instance "
                             "is passed to every compile(); each iteration calls D.train_on_batch on real "
                             "and on generated images, then combined.train_on_batch",
    "keras-dcgan-jacobgil": "jacobgil/keras-dcgan, dcgan.py: the combined model and D are compiled once; each "
                            "iteration sets discriminator.trainable = False before the combined model's "
                            "train_on_batch and back to True after it",
    "torch-docs-eval-mode": "PyTorch notes, 'Autograd mechanics', Evaluation Mode: module.eval() is orthogonal "
                            "to the ways of disabling gradients; modules such as BatchNorm2d behave by "
                            "training mode, and the user must call eval() to stop BatchNorm running-statistics "
                            "updates",
    "keras-gan-example": "Keras examples, 'DCGAN to generate face images': custom train_step with two "
                         "GradientTapes and one optimizer per model",
    "tf-docs-gradient-tape": "TensorFlow docs, tf.GradientTape: a non-persistent tape can compute "
                             "gradients once; persistent=True allows several calls",
}


# Every scenario runs from both initialisations, the article's constant weights and seeded random
# ones: which tensors a step moves can depend on the weights' values (a gradient that is exactly zero
# leaves a tensor where it was), and the same idiom can agree on one engine and differ on another,
# so agreement somewhere is no reason to drop one. The report says, from each run, where the two
# gave different observations.
INITS = ("constant", "random")
INITS_DECISION = ("Every scenario runs from both initialisations: which tensors a step moves can depend on "
                  "the weights' values (a gradient that is exactly zero leaves a tensor where it was).")


@dataclasses.dataclass
class Claim:
    id: str
    text: str
    source: str
    holds: Callable[["Observed"], bool]  # the prediction, evaluated on an observation
    engines: Sequence[str] = ENGINE_IDS  # the engines the claim speaks about
    inits: Sequence[str] = INITS  # the initialisations it speaks about
    variants: Optional[Sequence[str]] = None  # the variants it speaks about (None: all)


@dataclasses.dataclass
class Scenario:
    id: str
    question: str
    sources: Sequence[str]
    claims: List[Claim] = dataclasses.field(default_factory=list)
    implementations: Dict[str, Callable] = dataclasses.field(default_factory=dict)
    not_applicable: Dict[str, str] = dataclasses.field(default_factory=dict)
    inits: Sequence[str] = INITS
    variants: Sequence[str] = ("",)  # one run per variant; the implementation reads ctx.variant
    dtype: str = "float32"

    def implement(self, *engines: str):
        """Decorator: the function is this scenario's implementation on ``engines``."""
        def register(fn: Callable) -> Callable:
            for engine in engines:
                assert engine in ENGINE_IDS, engine
                self.implementations[engine] = fn
            return fn
        return register

    def source_code(self, engine: str) -> Optional[str]:
        fn = self.implementations.get(engine)
        return textwrap.dedent(inspect.getsource(fn)) if fn else None

    def status_without_run(self, engine: str) -> Optional[str]:
        if engine in self.implementations:
            return None
        return self.not_applicable.get(engine, "no implementation for this engine")


class Unobserved(Exception):
    """A claim needs an observation that does not exist (its run failed or did not happen)."""


class Observed:
    """Read-only view of one observation for claim predicates; ``peer`` reads the same
    engine's observation of another scenario (same init and variant unless given)."""

    def __init__(self, record: dict, records: Sequence[dict] = ()):
        self.record = record
        self.records = records

    def peer(self, scenario: str, variant: Optional[str] = None) -> "Observed":
        r = self.record
        want = r["variant"] if variant is None else variant
        match = next((x for x in self.records if x["scenario"] == scenario and x["engine"] == r["engine"]
                      and x["init"] == r["init"] and x["variant"] == want), None)
        if match is None or match["status"] not in ("ok", "raised"):
            raise Unobserved(scenario)
        return Observed(match, self.records)

    def moved(self, net: str, kind: str = "params", step: Optional[str] = None) -> List[str]:
        changed = self.record["changed"] if step is None else self.step(step)["changed"]
        return changed[net][kind]

    def step(self, label: str) -> dict:
        for step in self.record["steps"]:
            if step["label"] == label:
                return step
        raise Unobserved(label)  # e.g. an earlier call raised and the step never ran

    @property
    def error(self) -> Optional[dict]:
        return self.record.get("error")

    def value(self, key: str):
        if key not in self.record["values"]:
            raise Unobserved(key)  # e.g. recorded after a call that raised
        return self.record["values"][key]


_CATALOG: Dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    assert scenario.id not in _CATALOG, f"duplicate scenario {scenario.id}"
    _CATALOG[scenario.id] = scenario
    return scenario


def catalog() -> Dict[str, Scenario]:
    """Every scenario, in catalog order. Importing the modules imports no framework."""
    for module in MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return dict(_CATALOG)


def verdicts(scenario: Scenario, record: dict, records: Sequence[dict] = ()) -> List[dict]:
    """Each claim's verdict on one observation: holds, does-not-hold, or not-applicable
    (the claim does not speak about this engine, init or variant, or the run failed)."""
    out = []
    for claim in scenario.claims:
        applies = (record["engine"] in claim.engines and record["init"] in claim.inits
                   and (claim.variants is None or record["variant"] in claim.variants))
        if not applies or record["status"] not in ("ok", "raised"):
            verdict = "not-applicable"
        else:
            try:
                verdict = "holds" if claim.holds(Observed(record, records)) else "does-not-hold"
            except Unobserved:  # an observation or step it needs is missing
                verdict = "not-applicable"
        out.append({"claim": claim.id, "text": claim.text, "source": claim.source, "verdict": verdict})
    return out
