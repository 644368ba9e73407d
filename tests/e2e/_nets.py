"""Small but real networks for the end-to-end scenarios."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    """A ResNet basic block: conv-BN-ReLU-conv-BN plus the identity."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))  # <- block conv1/bn1
        return F.relu(x + self.bn2(self.conv2(h)))


class TinyResNet(nn.Module):
    """3x6x6 images -> 4 classes: stem, one basic block, global pool, linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = Block(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(F.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def image_batches(n: int, *, seed: int = 1, size: int = 8) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 3, 6, 6, generator=g), torch.randint(0, 4, (size,), generator=g))
        for _ in range(n)
    ]


class TinyLM(nn.Module):
    """A 1-layer transformer encoder LM with a padding mask and dropout."""

    def __init__(self, vocab: int = 32, d: int = 32):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        layer = nn.TransformerEncoderLayer(d, 2, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0
        h = self.encoder(self.emb(tokens), src_key_padding_mask=pad)
        return self.head(h)


def token_batches(
    n: int, *, padded=(), seed: int = 2, size: int = 4, seq: int = 12, vocab: int = 32
) -> list[torch.Tensor]:
    """``n`` batches of token ids; those whose index is in ``padded`` end in 3 pad tokens (0)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        t = torch.randint(1, vocab, (size, seq), generator=g)
        if i in padded:
            t[:, -3:] = 0  # right padding
        out.append(t)
    return out
