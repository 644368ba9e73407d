import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, 256), nn.ReLU(), nn.Linear(256, d_out), nn.Softmax(dim=1)
        )

    def forward(self, x):
        return self.net(x)


def train(model, loader, epochs=10):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for x, y in loader:
            probs = model(x)
            onehot = torch.zeros_like(probs).scatter_(1, y.unsqueeze(1), 1.0)
            loss = -torch.mean(torch.sum(onehot * torch.log(probs), dim=1))  # BUG
            opt.zero_grad()
            loss.backward()
            opt.step()
