"""Real PyTorch models for the analyzer: a torchvision-style ResNet, a GPT-style
transformer, and seeded-hazard models with their fixed twins."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# --- torchvision-style ResNet (BasicBlock; resnet18 = [2, 2, 2, 2]) ---------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes=1000):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes=1000) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes=num_classes)


def tiny_resnet() -> ResNet:
    return ResNet((1, 1, 1, 1), widths=(8, 8, 16, 16), num_classes=10)


# --- GPT-style transformer ----------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ctx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)
        self.heads = heads
        self.register_buffer("bias", torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / (d // self.heads) ** 0.5)
        att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, d)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.mlp_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab=50257, ctx=1024, d=768, layers=12, heads=12):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, heads, ctx) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx):
        pos = torch.arange(0, idx.shape[1], dtype=torch.long)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def tiny_gpt() -> GPT:
    return GPT(vocab=50, ctx=16, d=16, layers=2, heads=2)


# --- seeded hazards and their fixed twins ---------------------------------------------------------


class Classifier(nn.Module):
    """The seed's network: probabilities, then a hand-written log (bad) or log_softmax."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)
        self.fixed = fixed

    def forward(self, x):
        logits = self.head(torch.relu(self.fc1(x)))
        if self.fixed:
            return F.log_softmax(logits, dim=-1)
        return torch.log(torch.softmax(logits, dim=-1))


class Normalizer(nn.Module):
    """features / ||features||: the norm of a ReLU output can be exactly 0."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.fixed = fixed

    def forward(self, x):
        f = torch.relu(self.proj(x))
        n = f.norm(dim=-1, keepdim=True)
        return f / (n + 1e-6) if self.fixed else f / n


class RootFeature(nn.Module):
    """sqrt of a linear output (negative: NaN) / of a ReLU (gradient inf at 0)."""

    def __init__(self, variant: str = "negative"):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.variant = variant

    def forward(self, x):
        h = self.proj(x)
        if self.variant == "negative":
            return torch.sqrt(h)
        if self.variant == "grad":
            return torch.sqrt(torch.relu(h))
        return torch.sqrt(torch.relu(h) + 1e-6)


class HandSoftmax(nn.Module):
    """exp(logits) / sum(exp(logits)) overflows; softmax subtracts the max."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.fixed = fixed

    def forward(self, x):
        z = self.fc(x)
        if self.fixed:
            return torch.softmax(z, dim=-1)
        e = torch.exp(z)
        return e / e.sum(dim=-1, keepdim=True)


class Angle(nn.Module):
    """acos of a cosine similarity: rounding takes it past ±1; clamp inside (-1, 1)."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.fixed = fixed

    def forward(self, x):
        c = torch.tanh(self.a(x)) * 1.0001  # a cosine that rounding pushes past 1
        if self.fixed:
            c = c.clamp(-1 + 1e-6, 1 - 1e-6)
        return torch.acos(c)


class HandBCE(nn.Module):
    """-(y log p + (1-y) log(1-p)) with p = sigmoid: 1 - p is exactly 0 once p rounds to 1."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fc = nn.Linear(8, 1)
        self.fixed = fixed

    def forward(self, x, y):
        z = self.fc(x)
        if self.fixed:
            return F.binary_cross_entropy_with_logits(z, y)
        p = torch.sigmoid(z)
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


class HalfSum(nn.Module):
    """A float16 reduction of large activations overflows 65504; scaling first keeps it."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fixed = fixed

    def forward(self, x):
        if self.fixed:
            return (x / 1024).sum(dim=-1)
        return x.sum(dim=-1)


class Odd(nn.Module):
    """Two ops with no transfer function."""

    def forward(self, x):
        return torch.special.bessel_j0(torch.erfinv(x.clamp(-0.5, 0.5)))


class HandLayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps): a value plus a positive eps is positive. Clean."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x)
        mu = h.mean(-1, keepdim=True)
        var = ((h - mu) ** 2).mean(-1, keepdim=True)
        return (h - mu) / torch.sqrt(var + 1e-5)


class MaskedAttention(nn.Module):
    """Hugging Face-style additive mask: scores + (1 - mask) * finfo.min, then softmax. Clean."""

    def __init__(self):
        super().__init__()
        self.qk = nn.Linear(8, 16)

    def forward(self, x, mask):
        q, k = self.qk(x).split(8, dim=-1)
        scores = q @ k.transpose(-2, -1) / 8**0.5
        scores = scores + (1.0 - mask) * torch.finfo(scores.dtype).min
        return torch.softmax(scores, dim=-1)


class StableLogSoftmax(nn.Module):
    """Hand-written stable log-softmax: x - max - log(sum(exp(x - max))). Clean."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        z = self.fc(x)
        shifted = z - z.max(dim=-1, keepdim=True).values
        return shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
