import torch
import torch.nn as nn


def nll(p, target):
    picked = p[torch.arange(len(target)), target]
    return -torch.log(picked).mean()  # BUG


def label_smoothed(p, target, eps):
    smooth = -torch.log(p).mean(dim=1)  # BUG
    return (1 - eps) * nll(p, target) + eps * smooth.mean()


class Classifier(nn.Module):
    def __init__(self, vocab, dim, n):
        super().__init__()
        self.emb = nn.EmbeddingBag(vocab, dim)
        self.out = nn.Linear(dim, n)

    def forward(self, tokens, offsets):
        return torch.softmax(self.out(self.emb(tokens, offsets)), dim=-1)


def evaluate(model, batches, eps=0.1):
    total = 0.0
    for tokens, offsets, target in batches:
        probs = model(tokens, offsets)
        total += label_smoothed(probs, target, eps).item()
    return total / len(batches)


if __name__ == "__main__":
    model = Classifier(20000, 64, 4)
    batches = torch.load("val_batches.pt")
    print(evaluate(model, batches))
