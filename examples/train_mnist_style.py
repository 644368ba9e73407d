"""A plain PyTorch training script, MNIST-style, with a learning rate that diverges.

Nothing here knows about nantrap. Run it plain (`python examples/train_mnist_style.py`) and
the loss turns into nan within a few steps. Run it under the guard:

    nantrap run examples/train_mnist_style.py                     # the report names it
    nantrap run --policy rollback examples/train_mnist_style.py   # rolls back, lowers the LR

The data are synthetic 28x28 "digits" (a fixed random pattern per class plus noise), so the
script needs no download. Exit status 0 when the model learned (accuracy > 90%), else 1.
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn


def make_digits(n, generator):
    """n flattened 28x28 images of 10 classes: a fixed random pattern per class, plus noise."""
    patterns = (torch.rand(10, 28 * 28, generator=generator) > 0.8).float()
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = patterns[labels] + torch.randn(n, 28 * 28, generator=generator)
    return images, labels


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 64)
        self.act = nn.LeakyReLU(0.1)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=6.0)  # too high: diverges (1.5 trains)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)
    images, labels = make_digits(1024, torch.Generator().manual_seed(1))
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    step = 0
    for epoch in range(args.epochs):
        for i in range(0, len(images), args.batch_size):
            x, y = images[i : i + args.batch_size], labels[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), F.one_hot(y, 10).float())
            loss.backward()
            optimizer.step()
            step += 1
            if step % 8 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    print(f"final loss {loss.item():.4f} accuracy {accuracy:.3f}")
    return 0 if accuracy > 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
