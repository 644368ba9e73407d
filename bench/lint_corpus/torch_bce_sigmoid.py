import torch
import torch.nn.functional as F


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


model = Model()
x = torch.randn(8, 16)
y = torch.rand(8, 1)
pred = model(x)
loss = F.binary_cross_entropy(pred, y)  # BUG
loss2 = -(y * torch.log(pred) + (1 - y) * torch.log(1 - pred)).mean()  # BUG
