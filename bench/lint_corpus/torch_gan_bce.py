import torch
import torch.nn as nn


class D(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(784, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1), nn.Sigmoid()
        )

    def forward(self, x):
        return self.main(x)


netD = D()
criterion = nn.BCELoss()
real = torch.randn(64, 784)
label = torch.ones(64, 1)
output = netD(real)
errD_real = criterion(output, label)  # BUG
errD_manual = -torch.mean(torch.log(output) + torch.log(1 - netD(real)))  # BUG
