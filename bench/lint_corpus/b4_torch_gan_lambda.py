import torch
import torch.nn as nn

bce = lambda p, t: -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()  # BUG


class D(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(784, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1))

    def forward(self, x):
        return self.fc(x)


def step(d, g, real, z, opt_d):
    def normalize(v, scale):
        return v / scale  # BUG

    real = normalize(real, real.std())
    d_real = torch.sigmoid(d(real))
    d_fake = torch.sigmoid(d(g(z).detach()))
    loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    return loss_d
