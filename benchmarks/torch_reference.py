"""The PyTorch side of the comparisons: the CIFAR ResNet-18 of the AL references, written
plainly, and the per-sample gradient-norm loop that the public gradnorm code uses.

Benchmark-only (`pip install -e .[bench]`); nothing in disal_jax imports torch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
      )

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + self.shortcut(x))


class ResNet18(nn.Module):
  """CIFAR stem (3x3, stride 1, no max-pool), stages of widths w, 2w, 4w, 8w."""

  def __init__(self, num_classes: int = 10, width: int = 64):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    layers, cin = [], width
    for i in range(4):
      cout = width * 2**i
      for j in range(2):
        layers.append(BasicBlock(cin, cout, 2 if i > 0 and j == 0 else 1))
        cin = cout
    self.layers = nn.Sequential(*layers)
    self.linear = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layers(x)
    return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
  return -(F.softmax(logits, -1) * F.log_softmax(logits, -1)).sum()


def gradnorm_loop(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
  """||grad H(p(x))|| per sample by one backward pass per sample (the reference code's way)."""
  model.eval()
  params = [p for p in model.parameters() if p.requires_grad]
  norms = []
  for i in range(images.shape[0]):
    model.zero_grad(set_to_none=True)
    entropy_loss(model(images[i : i + 1])).backward()
    norms.append(torch.sqrt(sum((p.grad**2).sum() for p in params)))
  return torch.stack(norms)


def gradnorm_vmap(model: nn.Module, images: torch.Tensor, chunk: int) -> torch.Tensor:
  """The same norms by torch.func.vmap(grad) over chunks of samples."""
  from torch.func import functional_call, grad, vmap  # pylint: disable=import-outside-toplevel

  model.eval()
  params = {k: v.detach() for k, v in model.named_parameters()}
  buffers = {k: v.detach() for k, v in model.named_buffers()}

  def loss(p, x):
    return entropy_loss(functional_call(model, (p, buffers), (x[None],)))

  per_sample = vmap(grad(loss), in_dims=(None, 0))
  out = []
  for start in range(0, images.shape[0], chunk):
    g = per_sample(params, images[start : start + chunk])
    out.append(torch.sqrt(sum((v.reshape(v.shape[0], -1) ** 2).sum(1) for v in g.values())))
  return torch.cat(out)


@torch.no_grad()
def forward(model: nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
  model.eval()
  return torch.cat(
    [F.softmax(model(images[s : s + batch]), -1) for s in range(0, images.shape[0], batch)]
  )


def train_steps(
  model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int, lr: float = 0.1
) -> None:
  """Eager SGD steps (momentum 0.9, weight decay 5e-4) over the images in batches."""
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
  for s in range(0, images.shape[0] - batch + 1, batch):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(images[s : s + batch]), labels[s : s + batch]).backward()
    opt.step()
