import torch
import torch.nn.functional as F


def angular_loss(pred, target):
    cos = F.cosine_similarity(pred, target, dim=1)
    return torch.acos(cos).mean()  # BUG


def geodesic(R1, R2):
    trace = torch.einsum("bii->b", torch.bmm(R1, R2.transpose(1, 2)))
    return torch.acos((trace - 1) / 2)  # BUG
