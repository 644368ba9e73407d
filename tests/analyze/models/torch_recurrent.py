"""Real recurrent PyTorch models for the analyzer: sequence classifiers, a seeded log of
the hidden state, an exploding relu RNN and its fixed twin, a depthwise-separable block."""

from __future__ import annotations

import torch
from torch import nn

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class SeqClassifier(nn.Module):
    """rnn over (B, T, 6) features -> last hidden state -> class logits."""

    def __init__(self, kind: str = "lstm", *, log_hidden: bool = False, **rnn_kw):
        super().__init__()
        self.rnn = RNNS[kind](6, 16, batch_first=True, **rnn_kw)
        width = 32 if rnn_kw.get("bidirectional") else 16
        self.head = nn.Linear(width, 3)
        self.log_hidden = log_hidden

    def forward(self, x):
        out, _ = self.rnn(x)
        last = out[:, -1]
        if self.log_hidden:  # seeded: h = o * tanh(c) is in [-1, 1], log needs > 0
            last = torch.log(last)
        return self.head(last)


class CellReadout(nn.Module):
    """Reads the LSTM's final cell state c_n (which is not bounded by 1)."""

    def __init__(self, **rnn_kw):
        super().__init__()
        self.rnn = nn.LSTM(6, 8, batch_first=True, **rnn_kw)

    def forward(self, x):
        _, (h, c) = self.rnn(x)
        return h, c


class ReluRNN(nn.Module):
    """relu RNN whose recurrent weights all equal ``w``: |h| grows 16 * w per step."""

    def __init__(self, w: float = 0.5):
        super().__init__()
        self.rnn = nn.RNN(4, 16, nonlinearity="relu", batch_first=True)
        with torch.no_grad():
            self.rnn.weight_hh_l0.fill_(w)
            self.rnn.weight_ih_l0.fill_(0.5)
            self.rnn.bias_ih_l0.zero_()
            self.rnn.bias_hh_l0.zero_()
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class SeparableBlock(nn.Module):
    """MobileNet-style: depthwise 3x3 (groups = channels) + pointwise 1x1, then a
    grouped 3x3 (groups=2)."""

    def __init__(self):
        super().__init__()
        self.depthwise = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(16, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, groups=2)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.grouped(self.act(self.pointwise(self.act(self.depthwise(x)))))


class LSTMLanguageModel(nn.Module):
    """A word-level LSTM LM (PTB/AWD-LSTM-sized by default): embedding -> stacked LSTM ->
    tied-size decoder."""

    def __init__(self, vocab: int = 10000, d: int = 400, hidden: int = 1150, layers: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, hidden, num_layers=layers, batch_first=True)
        self.proj = nn.Linear(hidden, d)
        self.decoder = nn.Linear(d, vocab)

    def forward(self, idx):
        out, _ = self.lstm(self.embed(idx))
        return self.decoder(self.proj(out))
