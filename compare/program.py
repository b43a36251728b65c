"""The staged parity program, written once against the engine interface.

It runs inside an engine's child process and returns JSON-able facts plus named
arrays. Array keys are ``<config>/<stage>/<quantity>/<tensor>`` with quantity one of
output, loss, gradient, param, state; the parent compares them across engines.

Stages follow TensorFlow's guide on validating numerical equivalence: structure,
forward (training and inference mode), gradients, one iteration, ten iterations.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from compare.engines.base import Arrays, Engine
from compare.models.toy import BATCH, PARITY, PITFALLS, Config, initial_weights, make_batches

ITERATIONS = 10
TRAJECTORY = 50  # the parity configuration keeps going, for the report's loss curves
STAGES = ("structure", "forward.G.train", "forward.G.eval", "forward.D.train", "forward.D.eval",
          "gradients", "iteration.1", "iteration.10")


def configs() -> List[Config]:
    return [PARITY] + [config for config, _ in PITFALLS.values()]


def iterations(config: Config) -> int:
    """How many iterations a config's parity run trains for."""
    return TRAJECTORY if config == PARITY else ITERATIONS


def split_tensors(engine: Engine, gan, prefix: str) -> Arrays:
    """Every tensor of G and D under ``prefix``: trainable as 'param', the rest as 'state'."""
    trainable = engine.trainable(gan)
    out = {}
    for name, value in engine.export(gan).items():
        out[f"{prefix}/{'param' if name in trainable else 'state'}/{name}"] = value
    return out


def run_config(engine: Engine, config: Config, dtype: str,
               progress: Callable[[str], None]) -> Tuple[dict, Arrays]:
    weights = initial_weights(config)
    batches = make_batches(iterations(config))
    arrays: Arrays = {}
    facts: dict = {}
    c = config.name

    gan = engine.build(config, weights)
    trainable = engine.trainable(gan)
    exported = engine.export(gan)
    facts["structure"] = {
        "params": {name: list(shape) for name, shape in trainable.items()},
        "state": {name: list(v.shape) for name, v in exported.items() if name not in trainable},
        "param_count": int(sum(np.prod(s) for s in trainable.values())),
    }
    # The weight port round trip: loading then exporting gives back the canonical values
    # (rounded to the run's dtype) bit for bit.
    arrays[f"{c}/structure/param/port"] = np.array(
        [max(float(np.max(np.abs(exported[n] - w.astype(dtype)))) for n, w in weights.items())])

    progress(f"{c}: forward")
    first = batches[0]
    # The four forward passes share the freshly built GAN: inference mode first, as it must
    # leave every tensor as loaded (the recorded state checks that), then training mode,
    # which moves only the BN statistics of the net it runs.
    for mode, training in (("eval", False), ("train", True)):
        for net, x in (("G", first["z"]), ("D", first["real"])):
            stage = f"{c}/forward.{net}.{mode}"
            arrays[f"{stage}/output/{net}"] = engine.forward(gan, net, x, training)
            # training mode moves BN statistics: part of what must agree
            arrays.update({k: v for k, v in split_tensors(engine, gan, stage).items()
                           if "/state/" in k and f"/{net}." in k})
            record_batch_statistics(engine, gan, stage, arrays, net)

    progress(f"{c}: gradients")
    gan = engine.build(config, weights)
    losses, grads = engine.iteration(gan, first, step=False)
    put_losses(arrays, f"{c}/gradients", losses)
    arrays.update({f"{c}/gradients/gradient/{n}": g for n, g in grads.items()})

    progress(f"{c}: iterations")
    gan = engine.build(config, weights)
    history: Dict[str, List[float]] = {}
    for i, batch in enumerate(batches, start=1):
        losses, _ = engine.iteration(gan, batch)
        for key, value in losses.items():
            history.setdefault(key, []).append(value)
        if i in (1, ITERATIONS):
            stage = f"{c}/iteration.{i}"
            put_losses(arrays, stage, {k: v[-1] for k, v in history.items()} if i == 1 else
                       {f"{k}.{j}": x for k, v in history.items() for j, x in enumerate(v[:ITERATIONS], 1)})
            arrays.update(split_tensors(engine, gan, stage))
            record_batch_statistics(engine, gan, stage, arrays)
    facts["losses"] = history
    return facts, arrays


def put_losses(arrays: Arrays, stage: str, losses: Dict[str, float]) -> None:
    for name, value in losses.items():
        arrays[f"{stage}/loss/{name}"] = np.array([value], dtype=np.float64)


def record_batch_statistics(engine: Engine, gan, stage: str, arrays: Arrays, net: str = "") -> None:
    """The batch variances each BN layer (of ``net``, or of both) saw (reference engine
    only): the BN rule's input."""
    log = getattr(gan, "bn_batch_variances", None)
    if log is None:
        return
    for layer, variances in log.items():
        if variances and layer.startswith(net):
            arrays[f"{stage}/batchvar/{layer}"] = np.stack(variances)


def bn_estimator_probe(engine: Engine) -> dict:
    """Which variance a fresh BN layer keeps after one batch: biased (divide by n) or
    unbiased (n - 1). Measured against numpy, per engine and dtype."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((BATCH, 4, 3, 3)) * 2.0 + 0.5
    kept = engine.bn_probe(x)
    biased = x.var(axis=(0, 2, 3))
    unbiased = x.var(axis=(0, 2, 3), ddof=1)
    err_b = float(np.max(np.abs(kept - biased)))
    err_u = float(np.max(np.abs(kept - unbiased)))
    estimator = "biased" if err_b < err_u else "unbiased"
    return {"estimator": estimator, "error_vs_biased": err_b, "error_vs_unbiased": err_u,
            "n": int(x.shape[0] * x.shape[2] * x.shape[3]),
            # every value a float32 number: the layer computed in float32, whatever it stores
            "on_float32_grid": bool(np.all(kept == kept.astype(np.float32).astype(np.float64)))}


def run_program(engine: Engine, dtype: str, progress: Callable[[str], None], parity: bool = True,
                scenarios: Optional[List[str]] = None, threads: int = 1,
                scratch: Optional[str] = None) -> Tuple[dict, Arrays]:
    """The parity stages (unless ``parity`` is false) and, in float32, the scenarios
    (all, or the ids in ``scenarios``), with the framework on ``threads`` threads and
    ``scratch`` as the engine's folder for caches."""
    started = time.monotonic()
    engine.scratch = scratch
    engine.setup(dtype, threads)
    facts: dict = {"versions": engine.versions(), "dtype": dtype, "configs": {}, "phase_seconds": {},
                   "threads": engine.threads()}
    arrays: Arrays = {}
    if parity:  # the probes are what the parity rules and the report's facts read
        facts["bn_estimator"] = bn_estimator_probe(engine)
        facts["precision_probes"] = engine.precision_probes()
        probe_gan = engine.build(PARITY, initial_weights(PARITY))
        facts["computed_dtypes"] = engine.computed_dtypes(probe_gan, make_batches(1)[0])
    for config in configs() if parity else []:
        progress(f"{config.name}: build")
        config_facts, config_arrays = run_config(engine, config, dtype, progress)
        facts["configs"][config.name] = config_facts
        arrays.update(config_arrays)
    # per config and stage: "eager", or the compiler it ran under (an engine that compiles
    # records what it chose with Engine.ran)
    eager = {"gradients": "eager", "iterations": "eager"}
    facts["execution"] = {c.name: eager | getattr(engine, "execution", {}).get(c.name, {})
                          for c in (configs() if parity else [])}
    # where the process's time goes (the bench's account of the report's wall time)
    facts["phase_seconds"]["parity"] = time.monotonic() - started
    if dtype == SCENARIO_DTYPE:
        started = time.monotonic()
        facts["observations"] = run_scenarios(engine, progress, scenarios)
        facts["phase_seconds"]["scenarios"] = time.monotonic() - started
    facts["compilation_cache"] = engine.compilation_cache()
    return facts, arrays


SCENARIO_DTYPE = "float32"  # what users train in; "changed" is bit-exact in any dtype


def run_scenarios(engine: Engine, progress: Callable[[str], None],
                  only: Optional[List[str]] = None) -> List[dict]:
    from compare.observe import observe
    from compare.scenarios import catalog

    observations = []
    for scenario in catalog().values():
        if engine.id not in scenario.implementations or (only is not None and scenario.id not in only):
            continue
        progress(f"scenario {scenario.id}")
        for init in scenario.inits:
            for variant in scenario.variants:
                observations.append(observe(engine, scenario, init, variant))
    return observations
