import torch
import torch.nn as nn
import torch.nn.functional as F


class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.affine1 = nn.Linear(4, 128)
        self.affine2 = nn.Linear(128, 2)

    def forward(self, x):
        x = F.relu(self.affine1(x))
        return F.softmax(self.affine2(x), dim=1)


policy = Policy()


def select_action(state):
    probs = policy(state)
    action = torch.multinomial(probs, 1)
    log_prob = torch.log(probs.gather(1, action))  # BUG
    entropy = -(probs * torch.log(probs)).sum(dim=1)  # BUG
    return action, log_prob, entropy
