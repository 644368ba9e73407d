import torch


def sequence_loss(logits, targets, pad_id=0):
    mask = (targets != pad_id).float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (nll * mask).sum() / mask.sum()  # BUG


def accuracy(pred, gold, mask):
    correct = ((pred == gold) & mask).sum()
    return correct / mask.sum()
