import torch
import torch.nn.functional as F


def loss_fn(logits, target, z):
    probs = F.softmax(logits, dim=-1)
    nll = -torch.log(probs).gather(1, target[:, None]).mean()
    gate = torch.log(torch.sigmoid(z)).mean()
    return nll + gate


torch.manual_seed(0)
logits = torch.randn(4, 3, requires_grad=True)
target = torch.tensor([0, 1, 2, 1])
z = torch.randn(4)
loss = loss_fn(logits, target, z)
loss.backward()
print(f"loss {loss.item():.4f}")
