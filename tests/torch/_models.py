"""Small real models and helpers shared by the torch guard tests."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn


def line_of(marker: str, path: str | None = None) -> int:
    """1-based line of the only line in the caller's file that ends with ``marker``."""
    path = path or inspect.stack()[1].filename
    lines = Path(path).read_text().splitlines()
    hits = [i for i, text in enumerate(lines, 1) if text.rstrip().endswith(marker)]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


class Head(nn.Module):
    def __init__(self, d: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(d, classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(h), dim=-1)  # <- softmax in Head


class SmallCNN(nn.Module):
    """32x32x3 -> 10 classes; ``probs=True`` ends in softmax (for hand-written losses)."""

    def __init__(self, probs: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = Head(16 * 16, 10) if probs else nn.Linear(16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        return self.head(self.pool(h).flatten(1))


class TinyLM(nn.Module):
    """A small causal transformer LM: embedding, encoder layers with a -inf mask, dropout."""

    def __init__(self, vocab: int = 50, d: int = 32, layers: int = 1, seq: int = 16):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d, vocab)
        mask = torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1)
        self.register_buffer("causal", mask)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        return self.out(self.enc(self.tok(ids), mask=self.causal[:n, :n]))
