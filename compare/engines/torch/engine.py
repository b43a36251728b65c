"""PyTorch: the reference engine, written as the articles and the DCGAN example write it."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

from compare.engines.base import Arrays, Engine
from compare.model import Config, adam_epsilon, bn_settings

# canonical layer name -> index in the nn.Sequential of its network
G_LAYERS = {"deconv": 0, "bn": 1, "conv": 3}
D_LAYERS = {"conv1": 0, "bn": 1, "conv2": 4}
TENSOR_NAMES = {  # canonical tensor -> torch attribute
    "kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
    "moving_mean": "running_mean", "moving_variance": "running_var",
    "num_batches_tracked": "num_batches_tracked",
}


class Generator(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        momentum, eps = bn_settings(config, "torch")
        self.weights = nn.Sequential(
            nn.ConvTranspose2d(100, 64, 6, 1, bias=config.bias_before_bn),  # 1x1 -> 6x6
            nn.BatchNorm2d(64, eps=eps, momentum=momentum),
            nn.ReLU(True),
            nn.Conv2d(64, 3, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, inputs):
        return self.weights(inputs)


class Discriminator(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        momentum, eps = bn_settings(config, "torch")
        layers = [
            nn.Conv2d(3, 32, 3, 2, padding=1, bias=config.bias_before_bn),  # 6x6 -> 3x3
            nn.BatchNorm2d(32, eps=eps, momentum=momentum),
            nn.ReLU(True),
            nn.AvgPool2d(3),  # 3x3 -> 1x1
            nn.Conv2d(32, 1, 1),
        ]
        if config.output == "sigmoid":
            layers.append(nn.Sigmoid())
        self.weights = nn.Sequential(*layers)

    def forward(self, inputs):
        return self.weights(inputs).view(inputs.size(0), -1)


class Gan:
    def __init__(self, config: Config, dtype: torch.dtype):
        self.config = config
        self.G = Generator(config).to(dtype)
        self.D = Discriminator(config).to(dtype)
        eps = adam_epsilon(config, "torch")
        betas = (config.beta_1, config.beta_2)
        self.optimizer_G = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas, eps=eps)
        self.optimizer_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas, eps=eps)
        self.loss = nn.BCEWithLogitsLoss() if config.output == "logits" else nn.BCELoss()
        # The batch variances each BN normalises with: what the running-variance rule needs.
        self.bn_batch_variances = {"G.bn": [], "D.bn": []}
        for name, bn in (("G.bn", self.G.weights[1]), ("D.bn", self.D.weights[1])):
            bn.register_forward_hook(self.recorder(name))

    def recorder(self, name: str):
        def hook(module, inputs, output):
            if module.training:
                x = inputs[0].detach().to(torch.float64)
                self.bn_batch_variances[name].append(x.var(dim=(0, 2, 3), unbiased=False).numpy())
        return hook

    def module(self, net: str) -> nn.Module:
        return self.G if net == "G" else self.D


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


def torch_key(canonical: str) -> str:
    """'D.bn.moving_mean' -> 'weights.1.running_mean' (a key of D.state_dict())."""
    net, layer, tensor = canonical.split(".")
    index = (G_LAYERS if net == "G" else D_LAYERS)[layer]
    return f"weights.{index}.{TENSOR_NAMES[tensor]}"


def canonical_name(net: str, key: str) -> str:
    _, index, attr = key.split(".")
    layers = G_LAYERS if net == "G" else D_LAYERS
    layer = next(name for name, i in layers.items() if i == int(index))
    is_bn = layer == "bn"
    tensor = {
        "weight": "gamma" if is_bn else "kernel", "bias": "beta" if is_bn else "bias",
        "running_mean": "moving_mean", "running_var": "moving_variance",
        "num_batches_tracked": "num_batches_tracked",
    }[attr]
    return f"{net}.{layer}.{tensor}"


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
            module = gan.module(net)
            state = module.state_dict()
            for name, value in weights.items():
                if name.startswith(net + "."):
                    key = torch_key(name)
                    state[key] = torch.as_tensor(value, dtype=state[key].dtype)
            module.load_state_dict(state)
        return gan

    def export(self, gan: Gan) -> Arrays:
        out: Arrays = {}
        for net in ("G", "D"):
            for key, value in gan.module(net).state_dict().items():
                out[canonical_name(net, key)] = value.detach().cpu().numpy().astype(np.float64)
        return out

    def trainable(self, gan: Gan) -> Dict[str, Tuple[int, ...]]:
        return {
            canonical_name(net, key): tuple(p.shape)
            for net in ("G", "D") for key, p in gan.module(net).named_parameters()
        }

    def tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.dtype)

    def inputs(self, batch: Arrays):
        real, z = self.tensor(batch["real"]), self.tensor(batch["z"])
        n = real.size(0)
        return real, z, torch.ones(n, 1, dtype=self.dtype), torch.zeros(n, 1, dtype=self.dtype)

    def gradient_slots(self, gan: Gan):
        return {canonical_name(net, n): None if p.grad is None else p.grad.numpy()
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
        grads = {canonical_name("D", n): g.numpy().astype(np.float64) for n, g in d_grads.items()}
        grads.update({
            canonical_name("G", n): p.grad.numpy().astype(np.float64) for n, p in gan.G.named_parameters()
        })
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
