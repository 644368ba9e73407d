import torch
import torch.nn as nn
import torch.nn.functional as F


class Attn(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.W = nn.Linear(hidden * 2, hidden)
        self.v = nn.Parameter(torch.rand(hidden))

    def forward(self, hidden, encoder_outputs):
        energy = torch.tanh(self.W(torch.cat([hidden, encoder_outputs], 2)))
        score = torch.sum(self.v * energy, dim=2)
        return F.softmax(score, dim=1).unsqueeze(1)


def masked_nll(decoder_out, target, mask):
    gathered = torch.gather(decoder_out, 1, target.view(-1, 1)).squeeze(1)
    cross_entropy = -torch.log(gathered)  # BUG
    loss = cross_entropy.masked_select(mask).mean()
    return loss


class Decoder(nn.Module):
    def __init__(self, hidden, vocab):
        super().__init__()
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        return F.softmax(self.out(x), dim=1)


dec = Decoder(256, 1000)
out = dec(torch.randn(4, 256))
loss = masked_nll(out, torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool))
