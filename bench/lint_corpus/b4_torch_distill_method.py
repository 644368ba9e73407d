import torch
import torch.nn as nn
import torch.nn.functional as F


class Distiller(nn.Module):
    def __init__(self, student, teacher, T=4.0, alpha=0.9):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.T = T
        self.alpha = alpha

    def kl(self, p, q):
        return (p * (p.log() - q.log())).sum(dim=1).mean()  # BUG

    def forward(self, x, y):
        with torch.no_grad():
            t_logits = self.teacher(x)
        s_logits = self.student(x)
        p_t = F.softmax(t_logits / self.T, dim=1)
        p_s = F.softmax(s_logits / self.T, dim=1)
        soft = self.kl(p_t, p_s) * self.T * self.T
        hard = F.cross_entropy(s_logits, y)
        return self.alpha * soft + (1 - self.alpha) * hard
