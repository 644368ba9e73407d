import torch
import torch.nn as nn

model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2)).cuda().half()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # BUG


def energy(x):
    h = x.half()
    return torch.exp(h).sum()  # BUG
