import torch


def pairwise_distances(embeddings):
    dot = torch.matmul(embeddings, embeddings.t())
    sq = torch.diag(dot)
    d2 = sq.unsqueeze(0) - 2.0 * dot + sq.unsqueeze(1)
    d2 = torch.clamp(d2, min=0.0)
    return torch.sqrt(d2)  # BUG


def triplet_loss(anchor, positive, negative, margin=1.0):
    d_pos = torch.sqrt(torch.sum((anchor - positive) ** 2, dim=1))  # BUG
    d_neg = torch.sqrt(torch.sum((anchor - negative) ** 2, dim=1))  # BUG
    return torch.relu(d_pos - d_neg + margin).mean()
