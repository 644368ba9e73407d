"""One error hierarchy for the whole package."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nantrap.findings import Diagnosis

__all__ = [
    "AnalysisError",
    "BundleError",
    "ConfigError",
    "NanTrapError",
    "NantrapError",
    "UnsupportedOpError",
]


class NantrapError(Exception):
    """Base of every error nantrap raises on purpose."""


class ConfigError(NantrapError, ValueError):
    """A wrong argument or configuration value; the message lists what is allowed."""


class UnsupportedOpError(NantrapError):
    """An op the analysis cannot handle (raised only in strict mode)."""


class AnalysisError(NantrapError):
    """The range analysis failed on a node; the message names it."""


class BundleError(NantrapError):
    """A repro bundle is missing, corrupt or does not match the model."""


class NanTrapError(NantrapError, FloatingPointError):
    """Raised by the guard under ``policy="raise"``; carries the diagnosis."""

    def __init__(self, diagnosis: Diagnosis):
        self.diagnosis = diagnosis
        super().__init__(diagnosis.headline())
