"""Twin classifiers for ``nantrap analyze``: one takes log of a softmax, one log_softmax."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.fc1 = nn.Linear(16, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(torch.relu(self.fc1(x)))
        if self.fixed:
            return torch.log_softmax(logits, dim=-1)
        return torch.log(torch.softmax(logits, dim=-1))  # <- log of a softmax


def _make(fixed: bool):
    torch.manual_seed(0)
    model = Classifier(fixed)
    with torch.no_grad():
        model.head.weight.mul_(200.0)  # a confident head: logits spread past 104
    return model.eval(), (torch.rand(2, 16),)


def bad():
    return _make(False)


def fixed():
    return _make(True)
