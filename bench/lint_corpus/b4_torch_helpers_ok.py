import math

import torch
import torch.nn.functional as F


def entropy(p, eps=1e-8):
    return -(p * torch.log(p + eps)).sum(-1)


def gaussian_nll(x, mu, std):
    return (torch.log(std) + 0.5 * ((x - mu) / std) ** 2 + 0.5 * math.log(2 * math.pi)).mean()


def soft_ce(log_p, target):
    return -(target * log_p).sum(-1).mean()


def policy_loss(logits, actions, returns):
    probs = F.softmax(logits, dim=-1)
    ent = entropy(probs).mean()
    log_p = F.log_softmax(logits, dim=-1)
    picked = log_p.gather(1, actions.unsqueeze(1)).squeeze(1)
    return -(picked * returns).mean() - 0.01 * ent


def value_loss(head, h, target):
    mu, raw = head(h).chunk(2, dim=-1)
    std = F.softplus(raw) + 1e-4
    return gaussian_nll(target, mu, std)


def distill(student_logits, teacher_logits):
    return soft_ce(F.log_softmax(student_logits, -1), F.softmax(teacher_logits, -1))
