import torch
import torch.nn.functional as F


def contrastive_loss(out1, out2, label, margin=2.0):
    euclidean_distance = F.pairwise_distance(out1, out2)
    return torch.mean((1 - label) * torch.pow(euclidean_distance, 2)
                      + label * torch.pow(torch.clamp(margin - euclidean_distance, min=0.0), 2))


def info_nce(z1, z2, temperature=0.07):
    z1 = z1 / z1.norm(dim=1, keepdim=True)
    z2 = z2 / z2.norm(dim=1, keepdim=True)
    sim = torch.mm(z1, z2.t()) / temperature
    exp_sim = torch.exp(sim)
    pos = torch.diag(exp_sim)
    return -torch.log(pos / exp_sim.sum(dim=1)).mean()


def center_loss(features, centers, labels):
    diff = features - centers[labels]
    dist = torch.sqrt((diff * diff).sum(dim=1))  # BUG
    return dist.mean()
