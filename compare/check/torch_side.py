"""The reference side of a check, in the torch engine's process: the user's torch pair through
every stage, twice (the second run says whether the reference reproduces itself)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from compare import port
from compare.check.pairfile import Pair, PairError, built_pair
from compare.check.stages import make_batches, run_stages
from compare.engines.torch.engine import canonical_iteration

Arrays = Dict[str, np.ndarray]
BN_TYPES = ("BatchNorm1d", "BatchNorm2d")


def module_config(module: nn.Module) -> dict:
    """A module's plain settings (momentum, eps, stride, padding, ...): what a reader of
    configurations compares with the Keras side's."""
    out = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, (bool, int, float, str, type(None))) or (
                isinstance(value, tuple) and all(isinstance(v, (int, float, str)) for v in value)):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def ends_in_sigmoid(order: List[str], modules: Dict[str, nn.Module]) -> bool:
    leaves = [p for p in order if p in modules and not list(modules[p].children())]
    return bool(leaves) and isinstance(modules[leaves[-1]], nn.Sigmoid)


class TorchSide:
    def __init__(self, pair: Pair, dtype: str, iterations: int):
        self.pair, self.iterations = pair, iterations
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        torch.manual_seed(0)  # the torch pair's own initialisation is the check's starting point
        what = pair.build_torch()
        self.G, self.D = built_pair(pair.path, what, "torch")
        for net, module in (("G", self.G), ("D", self.D)):
            if not isinstance(module, nn.Module):
                raise PairError(f"{pair.path}: build_torch() must return torch modules; {net} is a "
                                f"{type(module).__name__}")
            module.to(self.dtype)
        self.batches = make_batches(pair.latent_shape, pair.image_shape, pair.batch, iterations)
        first = self.batches[0]
        self.specs, self.order = {}, {}
        for net, module, x in (("G", self.G, first["z"]), ("D", self.D, first["real"])):
            try:
                self.order[net], _ = port.execution_order(module, self.tensor(x))
                self.specs[net] = port.torch_specs(net, module, self.tensor(x))
            except port.PortError as exc:
                raise PairError(f"{pair.path}: {exc}")
            except Exception as exc:
                raise PairError(f"{pair.path}: {net} of build_torch() cannot run on a batch of shape "
                                f"{tuple(x.shape)}: {type(exc).__name__}: {exc}")
        self.weights = self.export()
        modules = dict(self.D.named_modules())
        self.loss_kind = pair.d_output["torch"] or ("probabilities" if ends_in_sigmoid(self.order["D"], modules)
                                                else "logits")
        self.batch_variances: Dict[str, List[np.ndarray]] = {}
        self.bn_count: Dict[str, int] = {}
        for net, module in (("G", self.G), ("D", self.D)):
            for path, sub in module.named_modules():
                if type(sub).__name__ in BN_TYPES:
                    sub.register_forward_hook(self.recorder(f"{net}.{path}"))

    def recorder(self, name: str):
        def hook(module, inputs, output):
            if module.training:
                x = inputs[0].detach().to(torch.float64)
                dims = [d for d in range(x.ndim) if d != 1]
                self.batch_variances.setdefault(name, []).append(x.var(dim=dims, unbiased=False).numpy())
                self.bn_count[name] = int(x.numel() // x.shape[1])
        return hook

    def tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.dtype)

    def module(self, net: str) -> nn.Module:
        return self.G if net == "G" else self.D

    def export(self) -> Arrays:
        return {**port.torch_export(self.G, self.specs["G"]), **port.torch_export(self.D, self.specs["D"])}

    def reset(self) -> SimpleNamespace:
        """The loaded weights again, fresh optimizers, no batch statistics: a stage's start."""
        for net in ("G", "D"):
            port.torch_load(self.module(net), self.specs[net], self.weights)
            self.module(net).train()
        self.batch_variances.clear()
        settings = self.pair.optimizer["torch"]

        def adam(module):
            return torch.optim.Adam(module.parameters(), lr=settings["lr"],
                                    betas=(settings["beta_1"], settings["beta_2"]), eps=settings["eps"])

        loss = nn.BCELoss() if self.loss_kind == "probabilities" else nn.BCEWithLogitsLoss()
        return SimpleNamespace(G=self.G, D=self.D, loss=loss, optimizer_G=adam(self.G), optimizer_D=adam(self.D))

    def split(self, prefix: str, nets=("G", "D")) -> Arrays:
        """Every tensor under ``prefix``: parameters as 'param', the rest as 'state'."""
        values = self.export()
        return {f"{prefix}/{s.kind}/{s.name}": values[s.name] for net in nets for s in self.specs[net]}

    def record(self, stage: str, arrays: Arrays, clear: bool = False) -> None:
        """The batch variances each BN layer normalised with since the stage began."""
        for layer, values in self.batch_variances.items():
            arrays[f"{stage}/batchvar/{layer}"] = np.stack(values)
        if clear:
            self.batch_variances.clear()

    def labels(self, real) -> Tuple[torch.Tensor, torch.Tensor]:
        """Ones and zeros shaped as D's output (read once, in inference mode: nothing moves)."""
        if not hasattr(self, "label_shape"):
            self.D.eval()
            with torch.no_grad():
                self.label_shape = self.D(real).shape
            self.D.train()
        return torch.ones(self.label_shape, dtype=self.dtype), torch.zeros(self.label_shape, dtype=self.dtype)

    def step(self, gan, batch, step: bool = True):
        real, z = self.tensor(batch["real"]), self.tensor(batch["z"])
        y_real, y_fake = self.labels(real)
        if step and self.pair.train_step_torch is not None:
            losses = self.pair.train_step_torch(gan.G, gan.D, gan.optimizer_G, gan.optimizer_D, gan.loss, real, z)
            return {k: float(v) for k, v in losses.items()}, {}
        errD_real, errD_fake, errG, d_grads = canonical_iteration(gan, real, y_real=y_real, y_fake=y_fake, z=z,
                                                                  step=step, keep_d_grads=True)
        keys = {s.torch_key: s.name for s in self.specs["D"]}
        grads = {keys[n]: g.numpy().astype(np.float64) for n, g in d_grads.items() if n in keys}
        keys = {s.torch_key: s.name for s in self.specs["G"]}
        grads.update({keys[n]: p.grad.numpy().astype(np.float64) for n, p in self.G.named_parameters()
                      if n in keys and p.grad is not None})
        return {"D_real": errD_real.item(), "D_fake": errD_fake.item(), "G": errG.item()}, grads

    def optimizer_state(self, gan, prefix: str) -> Arrays:
        out = {}
        for net, optimizer in (("G", gan.optimizer_G), ("D", gan.optimizer_D)):
            keys = {s.torch_key: s.name for s in self.specs[net]}
            for key, p in self.module(net).named_parameters():
                state = optimizer.state.get(p, {})
                for slot, name in (("exp_avg", "m"), ("exp_avg_sq", "v")):
                    if slot in state and key in keys:
                        out[f"{prefix}/optimizer/{keys[key]}.{name}"] = state[slot].numpy().astype(np.float64)
        return out

    def layer_outputs(self, net: str, x: np.ndarray, training: bool) -> Arrays:
        """The net's output and every weighted layer's, canonical layout."""
        module, x = self.module(net), self.tensor(x)
        wanted = set(port.layers_of(self.specs[net]))
        out: Arrays = {}

        def keep(path: str):
            def hook(mod, inputs, output):  # returns None: the output itself is left alone
                out.setdefault(f"{net}.{path}", output.detach().numpy().astype(np.float64))
            return hook

        hooks = [sub.register_forward_hook(keep(path)) for path, sub in module.named_modules() if path in wanted]
        module.train(training)
        try:
            with torch.no_grad():
                out[net] = module(x).numpy().astype(np.float64)
        finally:
            for hook in hooks:
                hook.remove()
            module.train(True)
        return out

    def run(self, progress: Callable[[str], None]) -> Arrays:
        return run_stages(self, self.batches, self.iterations, progress)

    def flat_estimator(self) -> str:
        """The variance a fresh BatchNorm1d keeps after one 2-D batch."""
        from compare.check.diagnose import estimator, probe_batch

        x = probe_batch(3, 2)
        bn = nn.BatchNorm1d(3, momentum=1.0).to(self.dtype)
        with torch.no_grad():
            bn(self.tensor(x))
        return estimator(bn.running_var.numpy().astype(np.float64), x)

    def facts(self) -> dict:
        """What the Keras side and the comparison need: the specs, each BN layer's settings and
        batch size, each module's configuration, the loss, Adam's settings and dtypes."""
        configs = {}
        for net in ("G", "D"):
            modules = dict(self.module(net).named_modules())
            configs[net] = [{"path": p, "type": type(modules[p]).__name__, "config": module_config(modules[p])}
                            for p in self.order[net] if p in modules and p]
        return {
            "specs": {net: [s.to_json() for s in specs] for net, specs in self.specs.items()},
            "modules": configs,
            "bn": {f"{net}.{s.layer}": {"momentum": self.module(net).get_submodule(s.layer).momentum,
                                        "eps": self.module(net).get_submodule(s.layer).eps,
                                        "n": self.bn_count.get(f"{net}.{s.layer}")}
                   for net in ("G", "D") for s in self.specs[net] if s.role == "moving_variance"},
            "loss": self.loss_kind,
            "bn_estimator_2d": self.flat_estimator(),
            "optimizer": self.pair.optimizer["torch"],
            "dtypes": {"parameters": sorted({str(p.dtype) for m in (self.G, self.D) for p in m.parameters()})},
        }
