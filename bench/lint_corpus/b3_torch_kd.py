import torch
import torch.nn.functional as F


def distillation_loss(student_logits, teacher_logits, T=4.0):
    p_s = F.softmax(student_logits / T, dim=1)
    p_t = F.softmax(teacher_logits / T, dim=1)
    kl = (p_t * (torch.log(p_t) - torch.log(p_s))).sum(dim=1).mean()  # BUG
    return kl * T * T


def distillation_ok(student_logits, teacher_logits, T=4.0):
    return F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1),
                    reduction="batchmean") * T * T
