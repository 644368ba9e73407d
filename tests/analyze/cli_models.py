"""Factories for the ``nantrap analyze module:factory`` CLI tests."""

import torch

from tests.analyze.models import torch_models as M


def classifier():
    return M.Classifier().eval(), (torch.rand(2, 8),)


def fixed_classifier():
    return M.Classifier(fixed=True).eval(), (torch.rand(2, 8),)
