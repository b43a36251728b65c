"""PyTorch: the reference engine, written as the articles and the DCGAN example write it."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

from compare import port
from compare.engines.base import Arrays, Engine
from compare.models import toy
from compare.models.toy import Config, adam_epsilon, builder_args


class Gan:
    def __init__(self, config: Config, dtype: torch.dtype):
        self.config = config
        G, D = toy.build_torch(**builder_args(config, "torch"))
        self.G, self.D = G.to(dtype), D.to(dtype)
        specs = toy.specs(config)
        self.specs = {net: [s for s in specs if s.net == net] for net in ("G", "D")}
        eps = adam_epsilon(config, "torch")
        betas = (config.beta_1, config.beta_2)
        self.optimizer_G = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas, eps=eps)
        self.optimizer_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas, eps=eps)
        self.loss = nn.BCEWithLogitsLoss() if config.output == "logits" else nn.BCELoss()
        # The batch variances each BN normalises with: what the running-variance rule needs.
        self.bn_batch_variances = {}
        for spec in specs:
            if spec.role == "moving_variance":
                name = f"{spec.net}.{spec.layer}"
                self.bn_batch_variances[name] = []
                self.module(spec.net).get_submodule(spec.layer).register_forward_hook(self.recorder(name))

    def recorder(self, name: str):
        def hook(module, inputs, output):
            if module.training:
                x = inputs[0].detach().to(torch.float64)
                self.bn_batch_variances[name].append(x.var(dim=(0, 2, 3), unbiased=False).numpy())
        return hook

    def module(self, net: str) -> nn.Module:
        return self.G if net == "G" else self.D

    def names(self, net: str) -> Dict[str, str]:
        """state_dict key -> canonical name, for every ported tensor of ``net``."""
        return {spec.torch_key: spec.name for spec in self.specs[net]}


def canonical_iteration(gan, real, z, y_real, y_fake, step: bool = True, keep_d_grads: bool = False):
    """The DCGAN example's iteration, for any G, D, loss and optimizers
    on ``gan`` (the bench runs it on the DCGAN-64 pair too). With ``step=False`` no optimizer
    steps. Returns the three losses and, if asked, a copy of D's gradients from before the G
    step (its backward adds into them)."""
    G, D, loss_func = gan.G, gan.D, gan.loss
    D.zero_grad()
    errD_real = loss_func(D(real), y_real)
    errD_real.backward()
    fake = G(z)
    errD_fake = loss_func(D(fake.detach()), y_fake)
    errD_fake.backward()
    if step:
        gan.optimizer_D.step()
    d_grads = {n: p.grad.clone() for n, p in D.named_parameters()} if keep_d_grads else None
    G.zero_grad()
    errG = loss_func(D(fake), y_real)
    errG.backward()
    if step:
        gan.optimizer_G.step()
    return errD_real, errD_fake, errG, d_grads


class TorchEngine(Engine):
    id = "torch"

    def setup(self, dtype: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)  # one by default: engines run side by side
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]

    def versions(self) -> Dict[str, str]:
        return {"torch": torch.__version__, "numpy": np.__version__}

    def threads(self) -> Dict[str, int]:
        return {"torch intra-op": torch.get_num_threads()}

    def build(self, config: Config, weights: Arrays) -> Gan:
        gan = Gan(config, self.dtype)
        for net in ("G", "D"):
            port.torch_load(gan.module(net), gan.specs[net], weights)
        return gan

    def export(self, gan: Gan) -> Arrays:
        """The ported tensors, and PyTorch's own (num_batches_tracked) under ``<net>.<key>``,
        in state_dict order."""
        out: Arrays = {}
        for net in ("G", "D"):
            module, names = gan.module(net), gan.names(net)
            ported = port.torch_export(module, gan.specs[net])
            for key, value in module.state_dict().items():
                out[names[key] if key in names else f"{net}.{key}"] = (
                    ported[names[key]] if key in names else value.detach().cpu().numpy().astype(np.float64))
        return out

    def trainable(self, gan: Gan) -> Dict[str, Tuple[int, ...]]:
        return {spec.name: spec.shape for net in ("G", "D") for spec in gan.specs[net] if spec.kind == "param"}

    def tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.dtype)

    def inputs(self, batch: Arrays):
        real, z = self.tensor(batch["real"]), self.tensor(batch["z"])
        n = real.size(0)
        return real, z, torch.ones(n, 1, dtype=self.dtype), torch.zeros(n, 1, dtype=self.dtype)

    def gradient_slots(self, gan: Gan):
        return {gan.names(net)[n]: None if p.grad is None else p.grad.numpy()
                for net in ("G", "D") for n, p in gan.module(net).named_parameters()}

    def forward(self, gan: Gan, net: str, x: np.ndarray, training: bool) -> np.ndarray:
        module = gan.module(net)
        module.train(training)
        with torch.no_grad():
            out = module(self.tensor(x))
        module.train(True)
        return out.numpy().astype(np.float64)

    def iteration(self, gan: Gan, batch: Arrays, step: bool = True):
        errD_real, errD_fake, errG, d_grads = canonical_iteration(gan, *self.inputs(batch), step=step, keep_d_grads=True)
        d_names, g_names = gan.names("D"), gan.names("G")
        grads = {d_names[n]: g.numpy().astype(np.float64) for n, g in d_grads.items()}
        grads.update({g_names[n]: p.grad.numpy().astype(np.float64) for n, p in gan.G.named_parameters()})
        losses = {"D_real": errD_real.item(), "D_fake": errD_fake.item(), "G": errG.item()}
        return losses, grads

    def bn_probe(self, x: np.ndarray) -> np.ndarray:
        bn = nn.BatchNorm2d(x.shape[1], momentum=1.0).to(self.dtype)  # new = batch statistic
        bn.train()
        with torch.no_grad():
            bn(self.tensor(x))
        return bn.running_var.numpy().astype(np.float64)

    def computed_dtypes(self, gan: Gan, batch: Arrays) -> Dict[str, str]:
        fake = gan.G(self.tensor(batch["z"]))
        return {
            "variables": ",".join(sorted({str(t.dtype) for n in "GD" for t in gan.module(n).state_dict().values()
                                          if t.is_floating_point()})),
            "G output": str(fake.dtype),
            "D output": str(gan.D(fake).dtype),
        }


ENGINE = TorchEngine()
