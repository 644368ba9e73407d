"""The framework-neutral half of the training guard: policies, snapshots, history,
diagnosis and the event log. The framework edges (``nantrap.torch``, ``nantrap.keras``)
collect observations and carry out the decisions made here."""

from nantrap.guard.stats import TensorStats

__all__ = ["TensorStats"]
