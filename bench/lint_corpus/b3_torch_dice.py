import torch


def dice_loss(pred, target):
    pred = torch.sigmoid(pred)
    inter = (pred * target).sum(dim=(2, 3))
    union = pred.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    return 1 - (2 * inter / union).mean()  # BUG


def iou(box_a, box_b):
    inter = (torch.min(box_a[:, 2:], box_b[:, 2:]) - torch.max(box_a[:, :2], box_b[:, :2])).clamp(min=0).prod(1)
    area_a = (box_a[:, 2:] - box_a[:, :2]).prod(1)
    area_b = (box_b[:, 2:] - box_b[:, :2]).prod(1)
    return inter / (area_a + area_b - inter)  # BUG
